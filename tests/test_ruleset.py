"""RuleSets and presets: selection by op class, op, module type, module path and first layer."""

import pytest
import torch
from models import vgg_like
from torch import nn

import lrpgraph


def counts(ex):
    return ex.stats["rules"]


def test_every_shipped_preset_loads():
    names = lrpgraph.preset_names()
    assert {"epsilon", "epsilon-gamma-box", "epsilon-plus-flat", "epsilon-alpha2-beta1", "attnlrp", "cp-lrp"} <= set(
        names
    )
    for name in names:
        ruleset = lrpgraph.preset(name)
        assert ruleset.name == name and ruleset.description


def test_preset_parameter_overrides():
    ruleset = lrpgraph.preset("epsilon-gamma-box", gamma=0.5, low=-3.0, high=3.0)
    assert ruleset.params["gamma"] == 0.5
    with pytest.raises(lrpgraph.RuleSetError, match="no parameter gama"):
        lrpgraph.preset("epsilon-gamma-box", gama=0.5)


def test_override_by_module_path_and_type():
    model = vgg_like()
    x = torch.rand(1, 3, 16, 16, dtype=torch.float64)
    base = lrpgraph.preset("epsilon")
    by_path = lrpgraph.RuleSet(
        rules=base.rules, params=base.params, overrides=[{"module": "1[0-9]", "rules": {"linear": "zplus"}}]
    )
    assert counts(lrpgraph.explain(model, x, target=0, rules=by_path))["linear:zplus"] == 2
    by_type = lrpgraph.RuleSet(
        rules=base.rules,
        params=base.params,
        overrides=[{"type": "Conv2d", "rules": {"conv": {"rule": "gamma", "gamma": 1.0}}}],
    )
    ex = lrpgraph.explain(model, x, target=0, rules=by_type)
    assert counts(ex)["conv:gamma"] == 3 and counts(ex)["linear:epsilon"] == 2


def test_op_name_beats_op_class():
    model = vgg_like()
    x = torch.rand(1, 3, 16, 16, dtype=torch.float64)
    ruleset = lrpgraph.RuleSet(rules={"conv": "zplus", "aten.conv2d.default": "epsilon"})
    assert counts(lrpgraph.explain(model, x, target=0, rules=ruleset))["conv:epsilon"] == 3


def test_first_layer_is_first_in_execution_order():
    model = vgg_like()
    x = torch.rand(1, 3, 16, 16, dtype=torch.float64)
    ruleset = lrpgraph.RuleSet(rules={"conv": "zplus"}, first={"conv": "flat"})
    graph_counts = counts(lrpgraph.explain(model, x, target=0, rules=ruleset))
    assert graph_counts["conv:flat"] == 1 and graph_counts["conv:zplus"] == 2


def test_custom_preset_file(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text(
        'description = "mine"\n[params]\nepsilon = 0.1\n[rules]\nlinear = "epsilon"\nconv = "zplus"\n'
        '[[override]]\nmodule = "13"\nrules = { linear = "flat" }\n'
    )
    ruleset = lrpgraph.preset(str(path))
    assert ruleset.name == "mine" and ruleset.params["epsilon"] == 0.1
    ex = lrpgraph.explain(vgg_like(), torch.rand(1, 3, 16, 16, dtype=torch.float64), target=0, rules=str(path))
    assert counts(ex)["linear:flat"] == 1 and counts(ex)["conv:zplus"] == 3


@pytest.mark.parametrize(
    "data,match",
    [
        ({"rules": {"linear": "nope"}}, "unknown rule 'nope'"),
        ({"rules": {"aten.fake.default": "epsilon"}}, "no registered op"),
        ({"override": [{"rules": {"linear": "epsilon"}}]}, "at least one of 'module'"),
        ({"colours": {}}, "unknown section"),
        ({"rules": {"linear": {"gamma": 1}}}, "must be a name or a table"),
    ],
)
def test_bad_rule_sets(data, match):
    with pytest.raises(lrpgraph.RuleSetError, match=match):
        lrpgraph.RuleSet.from_dict(data)


def test_changing_a_rule_set_changes_the_plan():
    model = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 2)).double()
    x = torch.randn(2, 3, dtype=torch.float64)
    ruleset = lrpgraph.RuleSet(rules={"linear": "epsilon"})
    a = lrpgraph.explain(model, x, target=0, rules=ruleset).relevance["input"]
    ruleset.rules["linear"] = "flat"
    b = lrpgraph.explain(model, x, target=0, rules=ruleset)
    assert counts(b) == {"linear:flat": 2, "activation:pass": 1}
    assert not torch.allclose(a, b.relevance["input"])
