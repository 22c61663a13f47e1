"""A forward that draws random numbers (ViT-MAE's random masking, a sampled set of keys): the walk reads the values
the forward drew. A random op is never recomputed (a second draw differs), and `verify` replays the forward with the
generator where explain's forward started, so the replay draws the same values."""

import torch
from torch import nn

import lrpgraph

TINY = lrpgraph.preset("epsilon", epsilon=1e-300, stabilizer=1e-300)


class RandomMask(nn.Module):
    """out = Σ_i w_i·x_i·m_i, m = (rand > 0.5) drawn in the forward: relevance w_i·x_i where m_i = 1, else 0."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.linspace(-1.0, 1.5, 16, dtype=torch.float64))

    def forward(self, x):
        mask = (torch.rand(x.shape, dtype=x.dtype) > 0.5).to(x.dtype)
        return (self.w * x * mask).sum(-1, keepdim=True)


def test_the_walk_reads_the_mask_the_forward_drew():
    x = torch.linspace(0.5, 2.0, 16, dtype=torch.float64)[None]
    model = RandomMask().eval()
    torch.manual_seed(3)
    drawn = (torch.rand(x.shape, dtype=x.dtype) > 0.5).to(x.dtype)  # what the forward's one draw gives
    torch.manual_seed(3)
    ex = lrpgraph.explain(model, x, target=0, rules=lrpgraph.preset("epsilon", epsilon=1e-12))
    assert 0 < int(drawn.sum()) < 16
    assert torch.allclose(ex.output, (model.w * x * drawn).sum(-1, keepdim=True), rtol=1e-12)
    relevance = ex.relevance["x"]
    assert bool((relevance[drawn == 0] == 0).all()) and bool((relevance[drawn == 1] != 0).all())
    assert torch.allclose(relevance, (model.w * x * drawn).detach(), rtol=1e-5)  # the sum's rule: stabilizer 1e-6


def test_a_random_forward_is_verified():
    x = torch.linspace(0.5, 2.0, 16, dtype=torch.float64)[None]
    check = lrpgraph.verify(RandomMask().eval(), x, target=0, rules="epsilon")
    assert check.ok, check


class Noised(nn.Module):
    """out = 3·(x + ½·n), n = randn_like(x) drawn in the forward (VITS samples its latent so): the sum's rule reads
    its output and terms, which are cheap to recompute — but not n, which a recomputation would draw again."""

    def forward(self, x):
        return (x + 0.5 * torch.randn_like(x)) * 3.0


def test_the_walk_reads_the_noise_randn_like_drew():
    x = torch.linspace(0.5, 2.0, 16, dtype=torch.float64)[None]
    torch.manual_seed(5)
    ex = lrpgraph.explain(Noised(), x, target=torch.ones(1, 16, dtype=torch.float64), rules=TINY)
    y = ex.output / 3.0  # x + ½·n with the forward's own n
    torch.manual_seed(5)
    assert torch.allclose(y, x + 0.5 * torch.randn_like(x), rtol=1e-12)
    torch.testing.assert_close(ex.relevance["x"], x / y, rtol=1e-12, atol=0)  # R_x = x/(x + ½n)·R, R = 1
    assert lrpgraph.verify(Noised(), x, target=torch.ones(1, 16, dtype=torch.float64), rules="epsilon").ok


def test_a_recorded_call_draws_what_one_call_of_the_model_draws():
    """Recording a call (here forced) runs the model several times; those runs leave the generators as they found
    them, so explain's forward draws the values one call of the model would, and so does verify's replay."""
    x = torch.linspace(0.5, 2.0, 16, dtype=torch.float64)[None]
    model = RandomMask().eval()
    torch.manual_seed(5)
    drawn = (torch.rand(x.shape, dtype=x.dtype) > 0.5).to(x.dtype)
    after_one_call = torch.get_rng_state()
    torch.manual_seed(5)
    ex = lrpgraph.explain(model, x, target=0, rules="epsilon", tracer="record")
    assert torch.equal(torch.get_rng_state(), after_one_call)
    relevance = ex.relevance["x"]
    assert bool((relevance[drawn == 0] == 0).all()) and bool((relevance[drawn == 1] != 0).all())
    assert lrpgraph.verify(model, x, target=0, rules="epsilon", tracer="record").ok


class RandomLength(nn.Module):
    """Sums a random number of the first inputs (VITS draws its durations): only a recording can trace it."""

    def forward(self, x):
        n = int(torch.randint(1, x.shape[-1], ())) + 1
        return x[:, :n].sum(-1, keepdim=True)


def test_a_call_whose_shapes_follow_a_draw_is_verified():
    """verify records the call again from the generator state explain's recording started from: the same draw,
    the same shapes (else the replay's shapes differ from the recording's)."""
    x = torch.linspace(0.5, 2.0, 16, dtype=torch.float64)[None]
    torch.manual_seed(0)
    check = lrpgraph.verify(RandomLength(), x, target=0, rules="epsilon", tracer="record")
    assert check.ok, check
    torch.manual_seed(0)
    n = int(torch.randint(1, 16, ())) + 1
    relevance = check.explanation.relevance["x"]
    assert bool((relevance[0, :n] != 0).all()) and not relevance[0, n:].any()
