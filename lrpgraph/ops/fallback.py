"""Explicit fallbacks for ops without a rule, used only when the user asks and always reported.

"absorb": the node keeps its relevance (it is counted as absorbed); "pass": its relevance goes
unchanged to its single relevant input, which must have the output's shape.
"""

from __future__ import annotations

from .adapter import Adapter
from .gradient import Replay, form
from .registry import declare, rule

FALLBACK_CLASS = declare("fallback", absorbs="fallback")
MODES = ("absorb", "pass")


@rule(FALLBACK_CLASS, "absorb", default=True)
def absorb(R, inputs):
    return {}


@rule(FALLBACK_CLASS, "pass")
def pass_unchanged(R, inputs):
    ((name, value),) = inputs.items()
    if isinstance(R, list) or tuple(R.shape) != tuple(value.shape):
        raise ValueError("fallback 'pass' needs one relevant input shaped like the output")
    return {name: R}


@form(FALLBACK_CLASS, "absorb")
def absorb_form(call: Replay):
    return call.out.detach()


@form(FALLBACK_CLASS, "pass")
def pass_form(call: Replay):
    (key,) = call.relevant_keys()
    return call.passed(call.get(key), call.out)


class FallbackAdapter(Adapter):
    def __init__(self):
        super().__init__(FALLBACK_CLASS)

    def apply(self, call):
        inputs = {name: call.args[name] for name, rel in call.relevant.items() if rel is True}
        if call.kernel.name == "pass" and len(inputs) != 1:
            raise ValueError("fallback 'pass' needs exactly one relevant input")
        return call.run(inputs)


FALLBACK = FallbackAdapter()
