"""ss1bench: fast SS1 (Sketch Structured Transform) layers for PyTorch.

    from ss1bench import SSL
    layer = SSL(768, 3072, redn_factor=4, seed=42)

Nothing here queries a GPU at import time.
"""

from .convert import ConversionReport, LayerReport, conversion_report, convert_to_ss_linear
from .layer import SSL, cache_rotated_weights, set_structure_advisor
from .ops import ss1_linear
from .structure import SS1Structure

__version__ = "0.1.0"

__all__ = [
    "SSL",
    "ConversionReport",
    "LayerReport",
    "SS1Structure",
    "__version__",
    "cache_rotated_weights",
    "conversion_report",
    "convert_to_ss_linear",
    "set_structure_advisor",
    "ss1_linear",
]
