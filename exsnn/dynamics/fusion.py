"""Optional fusion of the integrator's elementwise float64 arithmetic through `torch.compile` (`FSSHSettings.compile`).

On a GPU, one FSSH step of 10^3-10^4 trajectories is bound by kernel launches, not arithmetic: eagerly, the
electronic substeps, the substep counts and the decoherence correction are some 400 tensor operations per step (3
states). Compiled, each of those functions is one to three fused kernels. The functions keep their eager meaning;
only rounding may differ (fused multiply-adds): the trajectories of `test_gpu.py` follow the eager ones to 1e-10
Bohr over 10 steps, with the same hops. The kernels are elementwise per trajectory, but torch.compile builds other
kernels for other batch shapes (a single trajectory, say), so a trajectory's numbers depend on its neighbours in
the batch through round-off (eager arithmetic keeps them to the bit).

Where compiling fails (no Triton or C++ compiler, an unsupported operation) the first call warns once and every call
runs eagerly from then on. On the CPU, compiling (about a minute per function) rarely pays: the setting is meant for
GPUs.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any


class Fused:
    """`function`, compiled with `torch.compile(dynamic=True)` when `enabled`, falling back to it eagerly (with one
    warning) if compiling or running the compiled version fails."""

    def __init__(self, function: Callable[..., Any], enabled: bool, name: str | None = None) -> None:
        self.function = function
        self.enabled = enabled
        self.name = name or getattr(function, "__name__", "function")
        self._compiled: Callable[..., Any] | None = None
        if enabled:
            import torch

            self._compiled = torch.compile(function, dynamic=True)

    @property
    def compiled(self) -> bool:
        """True while calls go through the compiled version."""
        return self._compiled is not None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._compiled is not None:
            try:
                return self._compiled(*(_plain(a) for a in args), **{k: _plain(v) for k, v in kwargs.items()})
            except Exception as exc:  # no compiler, an unsupported operation: eagerly from now on
                warnings.warn(f"torch.compile of the integrator's {self.name} failed ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''}); it runs eagerly", RuntimeWarning,
                              stacklevel=2)
                self._compiled = None
        return self.function(*args, **kwargs)


def _plain(value: Any) -> Any:
    """A tensor argument as a contiguous tensor of its own (a view or a strided tensor copied): the compiled code then
    guards on shapes alone, not on strides, storage offsets or the sizes of a view's base, which change from call to
    call and would make it recompile."""
    import torch

    if isinstance(value, torch.Tensor) and (value._base is not None or not value.is_contiguous()):
        return value.clone(memory_format=torch.contiguous_format)
    return value
