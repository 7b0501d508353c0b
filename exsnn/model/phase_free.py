"""Phase-free errors for sign-ambiguous pair quantities (NACs, transition dipoles), vectorised over samples.

Reference couplings carry an arbitrary sign per state and geometry: flipping the phase of state k flips every pair
quantity involving k. The phase-free error of a sample is the minimum, over the 2^(N-1) consistent state-sign
vectors p (p_0 = +1; pair ij flips by p_i p_j), of the squared error between prediction and sign-flipped reference.
Because the error is a sum over pairs, it is computed for every sign vector at once from two numbers per pair:
e+ = |pred - ref|^2 and e- = |pred + ref|^2, error(p) = sum_ij [e+ if p_i p_j = +1 else e-] = (e+ + e-)/2 summed
plus a sign-weighted (e+ - e-)/2 term: one small matrix product for the whole batch, on any device.
"""

from __future__ import annotations

import torch

from exsnn.data.phases import pair_sign_table, sign_vectors

__all__ = ["pair_sign_table", "per_sample_pair_errors", "phase_free_squared_error", "sign_vector_histogram", "sign_vectors"]


def per_sample_pair_errors(
    pred: torch.Tensor, ref: torch.Tensor, index: torch.Tensor | None, n_samples: int
) -> tuple[torch.Tensor, torch.Tensor]:
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
