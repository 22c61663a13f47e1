"""Bad arguments: each a clear error naming the argument, raised up front, the model left as it was."""

import numpy as np
import pytest
import torch
from guard import assert_unchanged, snapshot
from models import mlp, vgg_like

import lrpgraph
from lrpgraph import metrics

X = torch.randn(3, 6, dtype=torch.float64)


@pytest.fixture
def model():
    torch.manual_seed(0)
    return mlp()


# --- rule parameters: validated when the rule set is built ------------------------------------------


@pytest.mark.parametrize(
    "build,match",
    [
        (lambda: lrpgraph.preset("epsilon", epsilon="abc"), r"parameter epsilon must be a number.*'abc'"),
        (lambda: lrpgraph.preset("epsilon", epsilon=-0.5), r"epsilon must be ≥ 0"),
        (lambda: lrpgraph.preset("epsilon-gamma-box", gamma="abc", low=0.0, high=1.0), r"gamma must be a number"),
        (lambda: lrpgraph.preset("epsilon-gamma-box", gamma=-1.0, low=0.0, high=1.0), r"gamma must be ≥ 0"),
        (lambda: lrpgraph.preset("epsilon-gamma-box", low=2.0, high=1.0), r"zbox.*low must be below high"),
        (lambda: lrpgraph.preset("epsilon", epsilon=float("nan")), r"epsilon must be finite"),
        (lambda: lrpgraph.RuleSet(rules={"conv": {"rule": "gamma", "gamma": "x"}}), r"rule 'gamma' for conv.*gamma"),
        (lambda: lrpgraph.RuleSet(rules={"conv": {"rule": "alphabeta", "alpha": 2.0, "beta": 2.0}}), "alpha - beta"),
        (lambda: lrpgraph.RuleSet(rules=5), "rules must be a dict"),
        (lambda: lrpgraph.RuleSet.from_dict({"rules": "epsilon"}), r"\[rules\] must be a table"),
        (lambda: lrpgraph.preset(3), "named by a string"),
    ],
)
def test_rule_parameters_are_checked_when_the_rule_set_is_built(build, match):
    with pytest.raises(lrpgraph.RuleSetError, match=match):
        build()


def test_box_preset_names_both_missing_bounds():
    with pytest.raises(lrpgraph.RuleSetError, match=r"'low', 'high'"):
        lrpgraph.explain(vgg_like(), torch.rand(1, 3, 16, 16, dtype=torch.float64), target=0, rules="epsilon-gamma-box")


def test_a_plain_rules_table_is_accepted(model):
    ex = lrpgraph.explain(model, X, target=0, rules={"linear": "flat"})
    assert ex.stats["rules"]["linear:flat"] == 3


# --- targets ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "target,match",
    [
        (1.5, "cannot read target 1.5"),
        (torch.tensor([1.0, 2.0, 0.0]), "must be integers"),
        (np.float64(2.0), "cannot read target"),
        (torch.tensor([[1, 2], [3, 4], [0, 1]]).float(), "must be integers"),
        (True, "not a bool"),
        (torch.tensor([1, 2]), "2 target ids"),
        ("two", "cannot read target"),
        ((0, np.int64(9)), "out of range"),
    ],
)
def test_bad_targets_are_refused(model, target, match):
    before = snapshot(model)
    with pytest.raises(lrpgraph.TargetError, match=match):
        lrpgraph.explain(model, X, target=target)
    assert_unchanged(before, model)


@pytest.mark.parametrize("target", [np.int64(2), torch.tensor(2), np.array(2), [2, 2, 2], np.array([2, 2, 2])])
def test_integer_ids_of_any_kind_act_like_a_python_int(model, target):
    expected = lrpgraph.explain(model, X, target=2).relevance["input"]
    torch.testing.assert_close(lrpgraph.explain(model, X, target=target).relevance["input"], expected)


def test_contrastive_needs_two_classes():
    one_class = torch.nn.Linear(6, 1).double()
    with pytest.raises(lrpgraph.TargetError, match="two or more classes"):
        lrpgraph.explain(one_class, X, target=0, contrastive=True)


# --- other arguments and inputs ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"dtype": torch.int64}, "dtype must be a floating-point"),
        ({"dtype": "float32"}, "dtype must be a floating-point"),
        ({"memory_budget": "1GB"}, "memory_budget must be a number of bytes"),
        ({"memory_budget": -5}, "memory_budget must be a number of bytes"),
        ({"offload": "yes"}, "offload must be True or False"),
        ({"contrastive": 1}, "contrastive must be True or False"),
        ({"fallback": "magic"}, "fallback must be one of"),
        ({"record": 5}, "record must be a module path"),
        ({"output": 7}, "no floating-point output"),
        ({"rules": 3.5}, "rules must be a preset name"),
    ],
)
def test_bad_options_name_the_argument(model, kwargs, match):
    before = snapshot(model)
    with pytest.raises(lrpgraph.LRPGraphError, match=match):
        lrpgraph.explain(model, X, **{"target": 0, **kwargs})
    assert_unchanged(before, model)


def test_an_empty_batch_is_refused_up_front(model, monkeypatch):
    from lrpgraph.engine import tracers

    monkeypatch.setattr(tracers, "export_program", lambda *a: pytest.fail("traced an empty batch"))
    with pytest.raises(lrpgraph.InputError, match=r"input 'input' is empty"):
        lrpgraph.explain(model, torch.zeros(0, 6, dtype=torch.float64), target=0)


def test_nan_or_infinity_is_an_error_or_with_strict_false_a_warning(model):
    bad = X.clone()
    bad[1, 2] = float("nan")
    with pytest.raises(lrpgraph.InputError, match="input 'input' contains NaN"):
        lrpgraph.explain(model, bad, target=0)
    with pytest.warns(UserWarning, match="contains NaN"):
        ex = lrpgraph.explain(model, bad, target=0, strict=False)
    assert torch.isfinite(ex.relevance["input"][0]).all()
    with torch.no_grad():
        model[-1].bias[0] = float("inf")  # the output, not the input
    with pytest.raises(lrpgraph.InputError, match="output 'output' contains NaN or infinite"):
        lrpgraph.explain(model, X, target=0)  # the explained logit is infinite
    assert torch.isfinite(lrpgraph.explain(model, X, target=1).relevance["input"]).all()  # another one is not


def test_results_never_alias_the_callers_tensors():
    identity = torch.nn.Identity()
    x = torch.randn(2, 3, dtype=torch.float64)
    seed = torch.randn(2, 3, dtype=torch.float64)
    ex = lrpgraph.explain(identity, x, target=seed)
    for result in (ex.relevance["input"], ex.output, ex.seed):
        assert result.untyped_storage().data_ptr() not in (
            x.untyped_storage().data_ptr(),
            seed.untyped_storage().data_ptr(),
        )
    torch.testing.assert_close(ex.relevance["input"], seed)


# --- the public API walked with a table of bad arguments ----------------------------------------------

BAD_CALLS = {
    "explain(inputs=str)": lambda m: lrpgraph.explain(m, "text", target=0),
    "explain(inputs=None)": lambda m: lrpgraph.explain(m, None),
    "explain(target=dict)": lambda m: lrpgraph.explain(m, X, target={"a": 1}),
    "explain(target=Targets([]))": lambda m: lrpgraph.explain(m, X, target=lrpgraph.Targets([])),
    "explain(record=['nope'])": lambda m: lrpgraph.explain(m, X, target=0, record=["nope"]),
    "explain_many(batch_size=0)": lambda m: lrpgraph.explain_many(m, [X[0]], batch_size=0),
    "explain_many(max_tokens=0.5)": lambda m: lrpgraph.explain_many(m, [X[0]], max_tokens=0.5),
    "explain_many(text, no tokenizer)": lambda m: lrpgraph.explain_many(m, ["some text"]),
    "explain_many(target count)": lambda m: lrpgraph.explain_many(m, [{"input": X[0]}], target=[1, 2]),
    "preset(unknown)": lambda m: lrpgraph.preset("no-such-preset"),
    "preset(unknown param)": lambda m: lrpgraph.preset("epsilon", gama=1),
    "RuleSet(overrides=str)": lambda m: lrpgraph.RuleSet(overrides="x"),
    "RuleSet(positional=x)": lambda m: lrpgraph.RuleSet(positional="x"),
    "trace(inputs=int)": lambda m: lrpgraph.trace(m, 3),
    "coverage(rules=int)": lambda m: lrpgraph.coverage(m, X, rules=3),
    "metrics.completeness_error(shapes)": lambda m: metrics.completeness_error(torch.ones(3, 4), torch.ones(2)),
    "metrics.localisation(shapes)": lambda m: metrics.localisation(torch.ones(3, 4), torch.ones(3, 5)),
    "metrics.gini(int)": lambda m: metrics.gini(torch.ones(3, 4)),
    "seeds.cosine_similarity(pairs)": lambda m: lrpgraph.seeds.cosine_similarity(torch.ones(2, 3), [(0, 5)])(
        torch.ones(2, 3, 4)
    ),
}


@pytest.mark.parametrize("name", list(BAD_CALLS))
def test_no_public_function_raises_a_bare_python_error_on_a_bad_argument(model, name):
    try:
        BAD_CALLS[name](model)
    except (lrpgraph.LRPGraphError, ValueError) as error:
        assert str(error)  # a message saying what is wrong
    except (KeyError, TypeError, IndexError, ZeroDivisionError, AttributeError) as error:
        pytest.fail(f"{name} raised a bare {type(error).__name__}: {error}")
