"""The residual-sum pass (`flow/residuals.py`): which sums are residual, and what their branches hold."""

import torch
from reference_models import models, resnet

from lrpgraph.capture.call import prepare_call
from lrpgraph.engine.traced import traced
from lrpgraph.ops.adapter import RoleKind
from lrpgraph.tools.zoo import architectures


def _analysis(model, inputs):
    model_trace = traced(model, *prepare_call(model, inputs))
    return model_trace.graph, model_trace.analysis


def _residuals(analysis):
    return {node: role for node, role in analysis.roles.items() if role.kind is RoleKind.RESIDUAL}


def _sums(graph):
    return [n for n in graph.nodes if n.op == "call_function" and n.target == torch.ops.aten.add.Tensor]


def test_vit_blocks_are_residual_and_the_position_sum_is_not():
    _, vit = models()
    graph, analysis = _analysis(vit, torch.randn(2, 3, 16, 16, dtype=torch.float64))
    residuals = _residuals(analysis)
    blocks = [n for n in _sums(graph) if graph.module_path(n).startswith("blocks.")]
    assert set(residuals) == set(blocks) and len(blocks) == 4  # add1 and add2 of each of the two blocks
    (positions,) = [n for n in _sums(graph) if n not in residuals]  # tokens + pos_embed: independent terms
    assert graph.module_path(positions) == ""
    add1 = next(n for n in blocks if graph.module_path(n) == "blocks.1")  # the second block's attention half
    branch = residuals[add1].branch
    assert branch.shortcut is add1.args[residuals[add1].operand == "other"]  # the residual stream
    assert branch.output is add1.args[residuals[add1].operand == "self"] and branch.nodes[-1] is branch.output
    paths = {graph.module_path(n) for n in branch.nodes}
    assert {"blocks.1.norm1", "blocks.1.attn.qkv", "blocks.1.attn.proj", "blocks.1.attn.proj_drop"} <= paths
    assert all(p.startswith("blocks.1.") or p == "blocks.1" for p in paths)  # nothing of block 0, nor the stream
    targets = {n.target for n in branch.nodes}
    assert {torch.ops.aten.layer_norm.default, torch.ops.aten.softmax.int, torch.ops.aten.matmul.default} <= targets
    assert not set(branch.inputs) & set(branch.nodes) and branch.shortcut not in branch.inputs
    assert {graph.state_names.get(n) for n in branch.inputs} >= {"blocks.1.attn.qkv.weight", "blocks.1.norm1.weight"}


def test_resnet_identity_shortcuts_are_residual_and_the_downsample_is_not():
    model = resnet()
    graph, analysis = _analysis(model, torch.randn(2, 3, 16, 16, dtype=torch.float64))
    residuals = _residuals(analysis)
    by_block = {graph.module_path(n): n for n in _sums(graph) if graph.module_path(n).startswith("blocks.")}
    assert set(by_block) == {"blocks.0", "blocks.1", "blocks.2"}
    assert set(residuals) == {by_block["blocks.0"], by_block["blocks.1"]}  # blocks.2 adds a downsample of x
    branch = residuals[by_block["blocks.1"]].branch
    paths = [graph.module_path(n) for n in branch.nodes]  # each batch norm: the op and the getitem of its output
    assert paths == [f"blocks.1.{m}" for m in ("conv1", "bn1", "bn1", "relu", "conv2", "bn2", "bn2")]


def test_a_transformer_finds_its_blocks_only():
    """Llama: the two sums of each decoder layer; rotary sums (q·cos + rot(q)·sin) and RMSNorm's + eps are not."""
    (arch,) = architectures(["llama"])
    model, inputs = arch.build()
    graph, analysis = _analysis(model, inputs)
    residuals = _residuals(analysis)
    assert len(residuals) == 2 * len(model.model.layers)
    assert all(graph.module_path(n).startswith("model.layers.") for n in residuals)
    for role in residuals.values():
        rotary = [n for n in role.branch.nodes if n.target in (torch.ops.aten.cos.default, torch.ops.aten.sin.default)]
        assert not rotary  # cos/sin tables carry no relevance: inputs of the branch, not part of it


def test_a_branch_replays_transformers_grouped_experts_with_their_own_derivative():
    """transformers' grouped expert product runs its derivative as an autograd function torch.func cannot replay;
    the branch form equals the op and its VJP equals the op's own gradient, empty experts included."""
    import transformers.integrations.moe  # noqa: F401  (registers torch.ops.transformers.grouped_mm_fallback)

    from lrpgraph.ops.table import lookup

    op = torch.ops.transformers.grouped_mm_fallback.default
    x = torch.randn(7, 4, dtype=torch.float64, requires_grad=True)
    weight, offs = torch.randn(3, 4, 5, dtype=torch.float64), torch.tensor([2, 2, 6])  # expert 1 empty, row 6 none
    v = torch.randn(7, 5, dtype=torch.float64)
    (expected,) = torch.autograd.grad(op(x, weight, offs), x, v)

    def held(t):
        return lookup(op).with_statistics_held(op, {"input": t, "weight": weight, "offs": offs})

    out, pullback = torch.func.vjp(held, x.detach())
    torch.testing.assert_close(out, op(x.detach(), weight, offs), rtol=0, atol=1e-14)
    torch.testing.assert_close(pullback(v)[0], expected, rtol=0, atol=1e-14)
