"""State-sign (phase) conventions shared by training, committees and dynamics.

An adiabatic state's sign is arbitrary; flipping state k flips every pair quantity (NAC, transition dipole) that
involves k. The 2^(N-1) consistent state-sign vectors p (p_0 = +1) flip pair ij by p_i p_j.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import torch

from exsnn.data.properties import state_pairs


@lru_cache(maxsize=16)
def _sign_table(n_states: int) -> torch.Tensor:
    rows = [[1.0] + [1.0 - 2.0 * ((k >> b) & 1) for b in range(n_states - 1)] for k in range(2 ** (n_states - 1))]
    return torch.tensor(rows, dtype=torch.float64)


def sign_vectors(n_states: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """All consistent state-sign vectors, (S, N) float64, S = 2^(N-1), p_0 = +1 (shared: do not modify)."""
    return _sign_table_on(n_states, str(torch.device(device)))


@lru_cache(maxsize=64)
def _sign_table_on(n_states: int, device: str) -> torch.Tensor:
    return _sign_table(n_states).to(device)  # kept per device: no host-to-device copy per call


@lru_cache(maxsize=256)
def _pair_index(pairs: tuple[tuple[int, int], ...], device: str) -> tuple[torch.Tensor, torch.Tensor]:
    index = torch.tensor(pairs, device=device).reshape(-1, 2)
    return index[:, 0], index[:, 1]


def _pair_key(pairs: Sequence[tuple[int, int]] | None, n_states: int) -> tuple[tuple[int, int], ...]:
    return tuple((int(i), int(j)) for i, j in (pairs if pairs is not None else state_pairs(n_states)))


def pair_signs(state_signs: torch.Tensor, n_states: int, pairs: Sequence[tuple[int, int]] | None = None) -> torch.Tensor:
    """p_i p_j for each pair (default: all pairs i<j in exsnn order), (..., P) from state signs (..., N)."""
    key = _pair_key(pairs, n_states)
    if not key:
        return torch.ones((*state_signs.shape[:-1], 0), dtype=state_signs.dtype, device=state_signs.device)
    first, second = _pair_index(key, str(state_signs.device))
    return state_signs[..., first] * state_signs[..., second]


def pair_sign_table(n_states: int, pairs: Sequence[tuple[int, int]] | None = None, device: torch.device | str = "cpu") -> torch.Tensor:
    """p_i p_j for every consistent sign vector and pair, (S, P) (shared: do not modify)."""
    return _pair_sign_table(n_states, _pair_key(pairs, n_states), str(torch.device(device)))


@lru_cache(maxsize=256)
def _pair_sign_table(n_states: int, pairs: tuple[tuple[int, int], ...], device: str) -> torch.Tensor:
    return pair_signs(sign_vectors(n_states, device), n_states, pairs)


def best_state_signs(overlaps: torch.Tensor, n_states: int, pairs: Sequence[tuple[int, int]] | None = None) -> torch.Tensor:
    """The consistent sign vector (B, N) maximising sum_ij p_i p_j overlap_ij, from the overlaps (B, P) of pair
    quantities (new . reference) for `pairs` (default: all pairs i<j; several quantities may list a pair twice)."""
    scores = overlaps @ pair_sign_table(n_states, pairs, device=overlaps.device).to(overlaps.dtype).T  # (B, S)
    return sign_vectors(n_states, overlaps.device).to(overlaps.dtype)[torch.argmax(scores, dim=1)]


def state_signs_from_nacs(new: torch.Tensor, reference: torch.Tensor, n_states: int) -> torch.Tensor:
    """The consistent sign vector (B, N) maximising sum_ij p_i p_j (d_ij . d_ij_reference); NACs (B, P, ...)."""
    return best_state_signs((new.flatten(2) * reference.flatten(2)).sum(-1), n_states)
