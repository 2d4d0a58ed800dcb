"""floss_core: gradient flossing (Engelken, NeurIPS 2023) for ensembles of recurrent networks in PyTorch."""
from .lyapunov import lyapunov_spectrum, tangent_step
from .models import TanhRNN

__all__ = ["TanhRNN", "lyapunov_spectrum", "tangent_step"]
__version__ = "0.1.0"
