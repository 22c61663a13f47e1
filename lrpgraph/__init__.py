"""lrpgraph: Layer-wise Relevance Propagation for any PyTorch model, per tensor operation.

import lrpgraph
ex = lrpgraph.explain(model, inputs, target=3, rules="epsilon")
ex.relevance["x"]        # relevance in the input's shape
"""

from . import seeds, viz
from .coverage import CoverageReport, coverage
from .errors import InputError, LRPGraphError, MissingRuleError, RuleSetError, TargetError, TraceError
from .explain import explain
from .explanation import Conservation, Explanation
from .ruleset import Override, RuleSet, preset, preset_names
from .target import Targets
from .tracer import clear_cache, trace

__all__ = [
    "Conservation",
    "CoverageReport",
    "Explanation",
    "InputError",
    "LRPGraphError",
    "MissingRuleError",
    "Override",
    "RuleSet",
    "RuleSetError",
    "TargetError",
    "Targets",
    "TraceError",
    "clear_cache",
    "coverage",
    "explain",
    "preset",
    "preset_names",
    "seeds",
    "trace",
    "viz",
]
__version__ = "0.1.0"
