"""toolkit: weak-to-strong generalization experiments (Burns et al. 2023) with probes,
prompting and fine-tuning compared side by side on the same splits and weak labels."""

from toolkit._util import ToolkitError

__version__ = "0.1.0"
__all__ = ["ToolkitError", "__version__"]
