"""lrpgraph: Layer-wise Relevance Propagation for any PyTorch model, per tensor operation.

import lrpgraph
ex = lrpgraph.explain(model, inputs, target=3, rules="epsilon")
ex.relevance["x"]        # relevance in the input's shape

Layers, each importing only from those above it in this list: capture/ (torch.export → Graph),
ops/ (the op table: registry, adapters, rule kernels), flow/ (graph facts), presets/ (rule sets),
propagate/ (plan, schedule, store, forward, walker), api/ (explain), tools/ and metrics/.
"""

import sys

from . import integrations
from .api import seeds
from .api.explain import explain
from .api.explanation import Conservation, Explanation
from .api.generation import Generation, explain_generation
from .api.many import ExplainManyError, explain_many
from .api.saved import load
from .api.targets import Targets, TokenAt
from .api.traced import clear_cache, trace
from .api.verify import Verification, verify
from .errors import (
    InputError,
    LRPGraphError,
    MissingRuleError,
    RuleError,
    RuleSetError,
    TargetError,
    TraceError,
)
from .presets.ruleset import Override, RuleSet, preset, preset_names
from .tools import viz
from .tools.coverage import CoverageReport, coverage

# public module paths: `from lrpgraph.seeds import cosine_similarity`, `lrpgraph.viz.tokens_html`
sys.modules[f"{__name__}.seeds"] = seeds
sys.modules[f"{__name__}.viz"] = viz

__all__ = [
    "Conservation",
    "CoverageReport",
    "ExplainManyError",
    "Explanation",
    "Generation",
    "InputError",
    "LRPGraphError",
    "MissingRuleError",
    "Override",
    "RuleError",
    "RuleSet",
    "RuleSetError",
    "TargetError",
    "Targets",
    "TokenAt",
    "TraceError",
    "Verification",
    "clear_cache",
    "coverage",
    "explain",
    "explain_generation",
    "explain_many",
    "integrations",
    "load",
    "preset",
    "preset_names",
    "seeds",
    "trace",
    "verify",
    "viz",
]
__version__ = "0.1.0"
