"""exsnn: excited-state non-adiabatic molecular dynamics with equivariant multi-state networks."""

import warnings as _warnings

__version__ = "0.1.0"

# SchNetPack 2.2 scripts a few modules with torch.jit at import time; PyTorch >= 2.9 marks torch.jit.script as
# deprecated. Nothing a user of exsnn can act on, so it is not shown.
_warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
