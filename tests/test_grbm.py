"""GRBM math against brute-force enumeration of the hidden states of a tiny model, and the samplers
against the exact marginal distribution of h."""
import itertools
import math

import pytest
import torch

from zoo.models.grbm.model import GRBM, cosine_steps


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    m = GRBM(visible=2, hidden=3).double()
    with torch.no_grad():
        m.W.copy_(torch.tensor([[1.0, -0.5, 0.3], [0.2, 0.8, -1.0]], dtype=torch.float64))
        m.b.copy_(torch.tensor([0.1, -0.4, 0.2], dtype=torch.float64))
        m.mu.copy_(torch.tensor([0.5, -0.3], dtype=torch.float64))
        m.log_var.copy_(torch.tensor([math.log(0.5), math.log(2.0)], dtype=torch.float64))
    return m


H_STATES = torch.tensor(list(itertools.product([0.0, 1.0], repeat=3)), dtype=torch.float64)  # [8, 3]


def test_free_energy_is_minus_log_sum_over_hidden_states(tiny):
    v = torch.randn(5, 2, dtype=torch.float64)
    e = torch.stack([tiny.energy(v, h.expand(5, 3)) for h in H_STATES], 1)  # [5, 8]
    assert torch.allclose(tiny.free_energy(v), -torch.logsumexp(-e, 1), atol=1e-12)


def test_p_h_given_v_matches_enumeration(tiny):
    v = torch.randn(4, 2, dtype=torch.float64)
    e = torch.stack([tiny.energy(v, h.expand(4, 3)) for h in H_STATES], 1)
    post = torch.softmax(-e, 1)  # p(h | v) over the 8 states
    assert torch.allclose(post @ H_STATES, tiny.p_h_given_v(v), atol=1e-12)


def test_v_given_h_is_the_stated_gaussian(tiny):
    h = H_STATES[5].expand(6, 3)
    m = tiny.mean_v_given_h(h)
    v = torch.randn(6, 2, dtype=torch.float64)
    # E(v,h) - E(m,h) = ½‖(v − m)/σ‖²: E is that quadratic in v with its minimum at μ + W h
    assert torch.allclose(tiny.energy(v, h) - tiny.energy(m, h), 0.5 * ((v - m).pow(2) / tiny.var).sum(1), atol=1e-12)
    vv = v.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(tiny.energy(vv, h).sum(), vv)
    assert torch.allclose(g, tiny.energy_grad_v(v, h), atol=1e-12)


def _exact_p_h(m: GRBM) -> torch.Tensor:
    """p(h) ∝ ∫ e^{−E(v,h)} dv ∝ exp(bᵀh + ½‖(μ + W h)/σ‖² − ½‖μ/σ‖²)."""
    mean = m.mean_v_given_h(H_STATES)
    logits = H_STATES @ m.b + 0.5 * (mean.pow(2) / m.var).sum(1)
    return torch.softmax(logits.detach(), 0)


def _empirical(h: torch.Tensor) -> torch.Tensor:
    index = (h * torch.tensor([4.0, 2.0, 1.0], dtype=h.dtype)).sum(1).long()
    return torch.bincount(index, minlength=8).double() / len(h)


def test_gibbs_sampler_reaches_the_exact_marginal(tiny):
    g = torch.Generator().manual_seed(0)
    v0 = torch.randn(20000, 2, generator=g, dtype=torch.float64)
    _, h = tiny.gibbs(v0, steps=30, generator=g)
    tv = 0.5 * (_empirical(h) - _exact_p_h(tiny)).abs().sum()
    assert tv < 0.02


def test_gibbs_langevin_reaches_the_exact_marginal(tiny):
    g = torch.Generator().manual_seed(1)
    v0 = torch.randn(20000, 2, generator=g, dtype=torch.float64)
    _, h = tiny.gibbs_langevin(v0, steps=20, langevin_steps=40, eta=0.05, anneal=False, drift_per_batch=False,
                               generator=g)
    tv = 0.5 * (_empirical(h) - _exact_p_h(tiny)).abs().sum()
    assert tv < 0.03


def test_langevin_inner_chain_has_the_gaussian_moments(tiny):
    """Unadjusted Langevin with step η on N(m, σ²) is stationary at N(m, σ² / (1 − η / (2σ²)))."""
    g = torch.Generator().manual_seed(2)
    h = H_STATES[3].expand(40000, 3)
    eta = 0.05
    v = torch.zeros(40000, 2, dtype=torch.float64)
    for _ in range(300):
        v = v - eta * tiny.energy_grad_v(v, h) + math.sqrt(2 * eta) * torch.randn(v.shape, generator=g, dtype=v.dtype)
    var = tiny.var.detach()
    assert torch.allclose(v.mean(0), tiny.mean_v_given_h(h[:1])[0].detach(), atol=0.03)
    assert torch.allclose(v.var(0), var / (1 - eta / (2 * var)), rtol=0.03)


def test_cosine_schedule_and_reference_drift_scaling(tiny):
    assert cosine_steps(2.0, 4) == pytest.approx([2.0, 2.0 * (1 + math.cos(math.pi / 4)) / 2, 1.0,
                                                  2.0 * (1 + math.cos(3 * math.pi / 4)) / 2])
    v = torch.zeros(4, 2, dtype=torch.float64)
    a, _ = tiny.gibbs_langevin(v, 1, 3, eta=0.3, generator=torch.Generator().manual_seed(0))
    b, _ = tiny.gibbs_langevin(v, 1, 3, eta=0.3, drift_per_batch=False, generator=torch.Generator().manual_seed(0))
    assert a.shape == (4, 2) and not torch.allclose(a, b)  # the 1/B drift of the reference code is the default
