"""lrpgraph's presets as inseq attribution methods: `register()` adds `lrpgraph-<preset>` for every shipped preset
to inseq's registry (`inseq.load_model(model, "lrpgraph-attnlrp", tokenizer=…)`), so `model.attribute(…)`, its
aggregators and `show()` work with lrpgraph's relevance (`pip install 'lrpgraph[inseq]'`).

Each generation step is one `lrpgraph.explain` of the step's prefix, seeded with the logit of the token generated
there, as `explain_generation` explains it: relevance per prefix token, by the preset's rules. inseq's
`attributed_fn` (probability by default) is not used — LRP explains the logit. Decoder-only models. inseq is
imported when `register` is called, not before (this module imports without it).
"""

from __future__ import annotations

from typing import Any

from ..api.explain import explain
from ..errors import InputError
from ..presets.ruleset import preset_names

_REGISTERED: dict[str, type] = {}


def register() -> list[str]:
    """Register one inseq attribution method per shipped preset (once); returns their names."""
    if not _REGISTERED:
        try:
            from inseq.attr.feat.feature_attribution import FeatureAttribution
            from inseq.data import GranularFeatureAttributionStepOutput
        except ImportError as error:
            raise InputError(f"inseq is not installed ({error}): pip install 'lrpgraph[inseq]'") from None

        class LRPGraphAttribution(FeatureAttribution):
            """One lrpgraph explain per generation step, with the preset `rules`."""

            method_name = "lrpgraph"
            rules = "attnlrp"

            def __init__(self, attribution_model: Any, **kwargs: Any):
                super().__init__(attribution_model, hook_to_model=False)
                if attribution_model.is_encoder_decoder:
                    raise InputError("lrpgraph's inseq methods explain decoder-only models")
                self.attribute_batch_ids, self.forward_batch_embeds = True, False

            def attribute_step(
                self, attribute_fn_main_args: dict[str, Any], attribution_args: dict[str, Any] | None = None
            ) -> GranularFeatureAttributionStepOutput:
                ids, targets, _, mask = attribute_fn_main_args["additional_forward_args"][:4]
                inputs = {"input_ids": ids, "attention_mask": mask}
                ex = explain(self.attribution_model.model, inputs, target=targets.reshape(-1), rules=self.rules)
                relevance = ex.relevance["input_ids"].detach()
                return GranularFeatureAttributionStepOutput(target_attributions=relevance.unsqueeze(-1))

        _REGISTERED["lrpgraph"] = LRPGraphAttribution
        for name in preset_names():
            _REGISTERED[f"lrpgraph-{name}"] = type(
                f"LRPGraph_{name.replace('-', '_')}",
                (LRPGraphAttribution,),
                {"method_name": f"lrpgraph-{name}", "rules": name, "__module__": __name__},
            )
    return sorted(_REGISTERED)
