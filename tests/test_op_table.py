"""The op table is the one place to teach lrpgraph an op: an op class written in this file alone explains models
that use it; passes read its facts (a lookup's ids get relevance, roles of every product); the table refuses
facts that name arguments the op does not have."""

from __future__ import annotations

import pathlib

import pytest
import torch
from torch import nn

import lrpgraph
from lrpgraph.errors import MissingRuleError
from lrpgraph.ops.adapter import Adapter
from lrpgraph.ops.registry import declare, rule
from lrpgraph.ops.table import TABLE, Facts, check, register_ops

# --- a new op, unknown to lrpgraph: rows of a table looked up by ids, and a reversal of the feature axis ---


@torch.library.custom_op("lrpgraph_test::rows", mutates_args=())
def rows(table: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    return table[ids]


@rows.register_fake
def _(table, ids):
    return table.new_empty((*ids.shape, table.shape[-1]))


@torch.library.custom_op("lrpgraph_test::reverse", mutates_args=())
def reverse(x: torch.Tensor) -> torch.Tensor:
    return x.flip(-1)


@reverse.register_fake
def _(x):
    return torch.empty_like(x)


# --- everything lrpgraph needs to know about them, in this file only ---

ROWS = declare("test_rows")
REVERSE = declare("test_reverse", exact=True)  # hands on exactly what it receives


@rule(ROWS, "token", default=True)
def token(R, ids, out):
    """A looked-up row's relevance, summed over its features, is its id's."""
    return R.sum(-1)


@rule(REVERSE, "back", default=True)
def back(R, x, out):
    """Relevance moves back as the values moved."""
    return R.flip(-1)


class RowsAdapter(Adapter):
    facts = Facts(lookup="ids")

    def __init__(self):
        super().__init__(ROWS, data="ids")


class ReverseAdapter(Adapter):
    facts = Facts(moves_values=True)


register_ops(RowsAdapter(), torch.ops.lrpgraph_test.rows.default)
register_ops(ReverseAdapter(REVERSE, data="x"), torch.ops.lrpgraph_test.reverse.default)
check()


class Tagger(nn.Module):
    """Token ids → table rows → reversed features → linear → 3 classes per sentence (last position)."""

    def __init__(self, custom: bool):
        super().__init__()
        torch.manual_seed(0)
        self.table = nn.Embedding(20, 6)
        self.head = nn.Linear(6, 3)
        self.custom = custom

    def forward(self, input_ids):
        if self.custom:
            h = torch.ops.lrpgraph_test.reverse(torch.ops.lrpgraph_test.rows(self.table.weight, input_ids))
        else:
            h = self.table(input_ids).flip(-1)
        return self.head(torch.relu(h))[:, -1]


@pytest.mark.parametrize("rules", ["epsilon", "attnlrp", "abslrp"])
def test_a_new_op_class_in_one_file_explains_like_the_ops_it_replaces(rules):
    """absLRP is strict: the new lookup class is named once (as `embedding` is in its preset); the exact class
    (the reversal) needs no line."""
    if rules == "abslrp":
        rules = lrpgraph.preset("abslrp").with_rules(test_rows="token")
    ids = torch.tensor([[3, 7, 1, 12], [5, 5, 9, 0]])
    custom = lrpgraph.explain(Tagger(custom=True).double(), ids, target=1, rules=rules)
    builtin = lrpgraph.explain(Tagger(custom=False).double(), ids, target=1, rules=rules)
    assert custom.relevance["input_ids"].abs().sum() > 0  # the ids got relevance through the declared lookup
    torch.testing.assert_close(custom.relevance["input_ids"], builtin.relevance["input_ids"], rtol=1e-12, atol=1e-12)


def test_strict_methods_refuse_a_new_class_that_is_not_exact():
    ids = torch.tensor([[3, 7, 1, 12]])
    with pytest.raises(MissingRuleError, match="no rule for op class 'test_rows'"):
        lrpgraph.explain(Tagger(custom=True).double(), ids, target=1, rules="abslrp")


def test_facts_that_name_missing_arguments_are_refused(monkeypatch):
    op = torch.ops.aten.logcumsumexp.default
    monkeypatch.delitem(TABLE, op, raising=False)
    register_ops(RowsAdapter(), op, lookup="idz")
    with pytest.raises(RuntimeError, match=r"logcumsumexp\.default: idz not among its arguments"):
        check()
    monkeypatch.delitem(TABLE, op)


def test_flow_keeps_no_op_lists_of_its_own():
    flow = pathlib.Path(lrpgraph.__file__).parent / "flow"
    for path in flow.glob("*.py"):
        assert "aten" not in path.read_text(), f"{path.name} names ATen ops; their facts belong in the op table"


# --- roles of every product: elementwise (mul, multiply), matrix (mm, addmm, baddbmm, einsum) ---


class Attention(nn.Module):
    """softmax(q kᵀ) v written with the op under test; under CP-LRP q and k must get nothing."""

    def __init__(self, product: str):
        super().__init__()
        torch.manual_seed(1)
        self.q, self.k, self.v, self.out = (nn.Linear(4, 4) for _ in range(4))
        self.product = product

    def forward(self, x):  # x: [B, T, 4]
        q, k, v = self.q(x), self.k(x), self.v(x)
        probs = torch.softmax(q @ k.transpose(1, 2), -1)
        if self.product == "bmm":
            mixed = torch.bmm(probs, v)
        elif self.product == "baddbmm":
            mixed = torch.baddbmm(torch.zeros_like(v), probs, v)
        else:
            mixed = torch.einsum("bqk,bkd->bqd", probs, v)
        return self.out(mixed).sum(1)


class Gated(nn.Module):
    """up(x) · sigmoid(gate(x)) with torch.multiply: a gate, whose gate factor gets nothing under CP-LRP."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(2)
        self.up, self.gate, self.out = nn.Linear(4, 6), nn.Linear(4, 6), nn.Linear(6, 3)

    def forward(self, x):
        return self.out(torch.multiply(self.up(x), torch.sigmoid(self.gate(x))))


@pytest.mark.parametrize("product", ["bmm", "baddbmm", "einsum"])
def test_attention_values_are_found_for_every_matrix_product(product):
    model, x = Attention(product).double().eval(), torch.randn(2, 5, 4, dtype=torch.float64)
    ex = lrpgraph.explain(model, x, target=0, rules="cp-lrp", record=["q", "k", "v"])
    assert ex.latent["q"].abs().max() == 0 and ex.latent["k"].abs().max() == 0
    assert ex.latent["v"].abs().sum() > 0
    uniform = lrpgraph.explain(model, x, target=0, rules="attnlrp", record=["q"])
    assert uniform.latent["q"].abs().sum() > 0


def test_a_gate_written_with_multiply_is_a_gate():
    model, x = Gated().double().eval(), torch.randn(3, 4, dtype=torch.float64)
    ex = lrpgraph.explain(model, x, target=0, rules="cp-lrp", record=["gate", "up"])
    assert ex.latent["gate"].abs().max() == 0 and ex.latent["up"].abs().sum() > 0
