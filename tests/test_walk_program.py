"""The walk as generated code: one program per plan, schedule and recorded set, serving every shape."""

import torch
from models import tiny_llama
from test_promises import _traced

import lrpgraph
from lrpgraph.propagate.program import walk_program


def test_one_program_serves_every_length_and_records_what_is_asked():
    model = tiny_llama()
    inputs = {"input_ids": torch.randint(0, 64, (1, 9), generator=torch.Generator().manual_seed(0))}
    model_trace, values = _traced(model, inputs)
    plan = model_trace.plan(model_trace.graph.outputs[0], lrpgraph.preset("attnlrp"), None)
    schedule = plan.schedule(model_trace.shapes(values))
    program = walk_program(plan, schedule, frozenset())
    assert walk_program(plan, schedule, frozenset()) is program
    recorded = frozenset(plan.order[:3])
    assert walk_program(plan, schedule, recorded) is not program
    assert set(schedule.programs) == {(frozenset(), None), (recorded, None)}

    shorter = {k: v[:, :5] for k, v in inputs.items()}
    a = lrpgraph.explain(model, inputs, target=3, rules="attnlrp")
    b = lrpgraph.explain(model, shorter, target=3, rules="attnlrp")
    assert a.relevance["input_ids"].shape[1] == 9 and b.relevance["input_ids"].shape[1] == 5
    for ex in (a, b):  # every call conserves what it received: seed = inputs + absorbed
        c = ex.conservation
        total = float(c.input_total.sum()) + sum(c.absorbed.values())
        assert abs(total - float(c.seed)) <= 1e-5 * abs(float(c.seed))
    assert torch.isfinite(b.relevance["input_ids"]).all()
