"""Find residual sums: `y = x + b` where the shortcut x is an ancestor of the other term b, so that b = f(x).

A transformer block's `x + attn(norm(x))` and `x + mlp(norm(x))`, a ResNet block's identity shortcut. Sums of
independent terms (tokens + position embeddings) and sums whose terms only share an ancestor (a ResNet downsample
shortcut, which is computed from the block's input but not on the branch's path) are not residual. For each
residual sum the pass records the branch (`ops/branch.py`): the nodes on relevant paths from x to b and the values
they read from outside. A rule that needs the branch's Jacobian (absLRP's residual rule) reads it from the node's
Role. Which ops are sums is the op table's to say; paths run through relevant nodes only, so a normalisation scale
a pass cut (held constant) is an input of the branch, not part of it.
"""

from __future__ import annotations

from torch import fx

from ..capture.node_args import normalised_args
from ..ops.adapter import Role, RoleKind
from ..ops.branch import Branch
from ..ops.table import facts
from .relevance import value_inputs


def residual_roles(graph: fx.Graph, relevant: set[fx.Node], regions: dict[fx.Node, fx.Node]) -> dict[fx.Node, Role]:
    """{sum: Role(RESIDUAL, the shortcut's argument, branch)} for every sum of two relevant tensors one of which is
    an ancestor of the other through relevant nodes; sums inside a pointwise region (x + 0.044715·x³ in a tanh
    GELU: `pointwise.py`) are the region's, not residual."""
    position = {n: i for i, n in enumerate(graph.nodes)}
    roles: dict[fx.Node, Role] = {}
    for node in graph.nodes:
        f = facts(node.target)
        if node.op != "call_function" or f.arithmetic != "sum" or len(f.operands) != 2 or node in regions:
            continue
        args = normalised_args(node)
        a, b = (args.get(name) for name in f.operands)
        if not (isinstance(a, fx.Node) and isinstance(b, fx.Node) and a in relevant and b in relevant) or a is b:
            continue
        for name, shortcut, term in ((f.operands[0], a, b), (f.operands[1], b, a)):
            branch = _branch(shortcut, term, relevant, position)
            if branch is not None:
                roles[node] = Role(RoleKind.RESIDUAL, name, branch=branch)
                break
    return roles


def _branch(shortcut: fx.Node, term: fx.Node, relevant: set[fx.Node], position: dict[fx.Node, int]) -> Branch | None:
    """The nodes on relevant paths from `shortcut` to `term` (None if there is none) and the values they read."""
    if position[shortcut] > position[term]:
        return None
    end = position[term]
    below: set[fx.Node] = set()  # descendants of the shortcut, up to the term
    stack = [shortcut]
    while stack:
        node = stack.pop()
        for user in node.users:
            if user not in below and user in relevant and position[user] <= end and node in value_inputs(user):
                below.add(user)
                stack.append(user)
    if term not in below:
        return None
    nodes: set[fx.Node] = {term}  # those of them that are ancestors of the term
    stack = [term]
    while stack:
        for source in value_inputs(stack.pop()):
            if source in below and source not in nodes:
                nodes.add(source)
                stack.append(source)
    ordered = tuple(sorted(nodes, key=position.__getitem__))
    inputs = {n for node in ordered for n in node.all_input_nodes} - nodes - {shortcut}
    return Branch(shortcut, term, ordered, tuple(sorted(inputs, key=position.__getitem__)))
