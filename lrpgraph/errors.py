"""The exceptions lrpgraph raises: each says what went wrong, where, and what to do."""

from __future__ import annotations


class LRPGraphError(Exception):
    """Base class of every error lrpgraph raises on purpose."""


class TraceError(LRPGraphError):
    """torch.export could not trace the model; the message names the module that failed."""


class InputError(LRPGraphError, ValueError):
    """The inputs, output name or record names do not fit the model."""


class TargetError(LRPGraphError, ValueError):
    """The target does not select anything valid in the model's output."""


class RuleSetError(LRPGraphError, ValueError):
    """A rule set or preset names an unknown rule, op class, parameter or preset."""


class MissingRuleError(LRPGraphError):
    """A node that carries relevance has an op with no rule and no fallback was asked for."""


def first_line(error: BaseException) -> str:
    """The first line of an error's message ('' when it has none): what one-line reports show."""
    text = str(error).strip()
    return text.splitlines()[0] if text else ""


class RuleError(LRPGraphError, RuntimeError):
    """A rule failed while the walk ran it; the message names the node, its op and its module."""
