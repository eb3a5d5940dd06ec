"""ss1bench: fast SS1 (Sketch Structured Transform) layers for PyTorch.

    from ss1bench import SSL
    layer = SSL(768, 3072, redn_factor=4, seed=42)

Nothing here queries a GPU at import time.
"""

from .layer import SSL, set_structure_advisor
from .ops import ss1_linear
from .structure import SS1Structure

__version__ = "0.1.0"

__all__ = ["SSL", "SS1Structure", "__version__", "set_structure_advisor", "ss1_linear"]
