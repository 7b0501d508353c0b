"""Phase-free errors for sign-ambiguous pair quantities (NACs, transition dipoles), vectorised over samples.

Reference couplings carry an arbitrary sign per state and geometry: flipping the phase of state k flips every pair
quantity involving k. The phase-free error of a sample is the minimum, over the 2^(N-1) consistent state-sign
vectors p (p_0 = +1; pair ij flips by p_i p_j), of the squared error between prediction and sign-flipped reference.
Because the error is a sum over pairs, it is computed for every sign vector at once from two numbers per pair:
e+ = |pred - ref|^2 and e- = |pred + ref|^2, error(p) = sum_ij [e+ if p_i p_j = +1 else e-] = (e+ + e-)/2 summed
plus a sign-weighted (e+ - e-)/2 term: one small matrix product for the whole batch, on any device.
"""

from __future__ import annotations

from functools import lru_cache

import torch

from exsnn.data.properties import state_pairs


@lru_cache(maxsize=16)
def _sign_table(n_states: int) -> torch.Tensor:
    """State-sign vectors (S, N) with p_0 = +1, S = 2^(N-1)."""
    rows = [[1.0] + [1.0 - 2.0 * ((k >> b) & 1) for b in range(n_states - 1)] for k in range(2 ** (n_states - 1))]
    return torch.tensor(rows, dtype=torch.float64)


def sign_vectors(n_states: int, device: torch.device | str = "cpu") -> torch.Tensor:
    return _sign_table(n_states).to(device)


def pair_sign_table(n_states: int, pairs: list[tuple[int, int]] | None = None, device: torch.device | str = "cpu") -> torch.Tensor:
    """p_i p_j for each sign vector and pair, (S, P)."""
    pairs = pairs if pairs is not None else list(state_pairs(n_states))
    p = sign_vectors(n_states, device)
    if not pairs:
        return torch.ones((p.shape[0], 0), dtype=p.dtype, device=p.device)
    i = torch.tensor([a for a, _ in pairs], device=p.device)
    j = torch.tensor([b for _, b in pairs], device=p.device)
    return p[:, i] * p[:, j]


def per_sample_pair_errors(pred: torch.Tensor, ref: torch.Tensor, index: torch.Tensor | None, n_samples: int) -> tuple[torch.Tensor, torch.Tensor]:
    """e+ and e- per sample and pair, (B, P) each, from pred/ref (rows, P, 3); rows map to samples by `index`
    (atoms -> molecules for NACs; None when rows are the samples, e.g. transition dipoles)."""
    plus = ((pred - ref) ** 2).sum(-1)
    minus = ((pred + ref) ** 2).sum(-1)
    if index is None:
        return plus, minus
    zeros = torch.zeros((n_samples, pred.shape[1]), dtype=pred.dtype, device=pred.device)
    return zeros.index_add(0, index, plus), zeros.index_add(0, index, minus)


def phase_free_squared_error(
    plus: torch.Tensor, minus: torch.Tensor, pair_signs: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimum over sign vectors of the summed squared error, (B,), and the index of the best vector, (B,).

    plus/minus (B, P) from `per_sample_pair_errors` (concatenate several pair quantities along P to share one
    sign vector); pair_signs (S, P) from `pair_sign_table`.
    """
    signs = pair_signs.to(plus.dtype)
    errors = 0.5 * (plus + minus).sum(1, keepdim=True) + 0.5 * (plus - minus) @ signs.T  # (B, S)
    best, index = errors.min(dim=1)
    return best, index


def sign_vector_histogram(best_index: torch.Tensor, n_states: int) -> dict[str, int]:
    """How often each sign vector was chosen, keyed like '+-+'."""
    table = sign_vectors(n_states)
    counts = torch.bincount(best_index.cpu(), minlength=table.shape[0])
    return {"".join("+" if x > 0 else "-" for x in row.tolist()): int(c) for row, c in zip(table, counts)}
