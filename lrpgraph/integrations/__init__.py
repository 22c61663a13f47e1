"""lrpgraph inside the evaluation tools of the field: a Quantus `explain_func` and a Captum-style attribution.

Neither Quantus nor Captum is imported here; both call these with their own conventions.
"""

from .captum import LRP
from .quantus import explain_func

__all__ = ["LRP", "explain_func"]
