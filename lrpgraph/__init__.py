"""lrpgraph: Layer-wise Relevance Propagation for any PyTorch model, per tensor operation.

import lrpgraph
ex = lrpgraph.explain(model, inputs, target=3, rules="epsilon")
ex.relevance["x"]        # relevance in the input's shape

Layers, each importing only from those before it in this list: errors.py, capture/ (torch.export → Graph),
ops/ (the op table: registry, adapters, rule kernels), flow/ (graph facts), presets/ (rule sets), propagate/
(plan, schedule, store, forward, walker), engine/ (one call's trace and walks), viz.py (heatmaps), api/ (explain,
Explanation, targets, seeds), then tools/, metrics/, integrations/ and distributed/ (`tests/test_layers.py`).
"""

import sys

from . import integrations, viz
from .api import seeds
from .api.explanation import Conservation, Explanation, load
from .api.generation import Generation, explain_generation
from .api.many import ExplainManyError, explain_many
from .api.patching import Patching, activation_patching, attribution_patching, relevance_patching
from .api.pipelines import explain
from .api.reference import ReferenceExamples, reference_examples
from .api.similarity import explain_similarity
from .api.similarity_result import SimilarityExplanation
from .api.targets import Targets, TokenAt
from .api.verify import Verification, verify
from .engine.model_traces import clear_cache
from .engine.traced import trace
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
from .tools.coverage import CoverageReport, coverage
from .version import __version__ as __version__

# a public module path: `from lrpgraph.seeds import cosine_similarity`
sys.modules[f"{__name__}.seeds"] = seeds

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
    "Patching",
    "ReferenceExamples",
    "RuleError",
    "RuleSet",
    "RuleSetError",
    "SimilarityExplanation",
    "TargetError",
    "Targets",
    "TokenAt",
    "TraceError",
    "Verification",
    "activation_patching",
    "attribution_patching",
    "clear_cache",
    "coverage",
    "explain",
    "explain_generation",
    "explain_many",
    "explain_similarity",
    "integrations",
    "load",
    "preset",
    "preset_names",
    "reference_examples",
    "relevance_patching",
    "seeds",
    "trace",
    "verify",
    "viz",
]
