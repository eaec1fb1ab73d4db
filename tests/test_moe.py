"""The sparsely-gated MoE layer against brute force: per-example gates, per-expert sums, Monte-Carlo load."""
import pytest
import torch

from zoo.nn.moe import MoE, NoisyTopKGate, cv_squared, prob_in_top_k

f64 = torch.float64


def _gate(d=5, E=6, k=2, seed=0) -> NoisyTopKGate:
    torch.manual_seed(seed)
    gate = NoisyTopKGate(d, E, k).to(f64)
    with torch.no_grad():  # trained-looking weights: the zero init would make every clean logit equal
        gate.w_gate.normal_()
        gate.w_noise.normal_()
    return gate


def test_gate_matches_a_per_example_brute_force():
    gate = _gate(E=7, k=3)
    x, noise = torch.randn(9, 5, dtype=f64), torch.randn(9, 7, dtype=f64)
    g = gate(x, noise)
    for n in range(9):
        clean = [sum(x[n, j].item() * gate.w_gate[j, i].item() for j in range(5)) for i in range(7)]
        raw = [sum(x[n, j].item() * gate.w_noise[j, i].item() for j in range(5)) for i in range(7)]
        h = [c + noise[n, i].item() * (torch.log1p(torch.tensor(r, dtype=f64).exp()).item() + 1e-2)
             for i, (c, r) in enumerate(zip(clean, raw))]
        kept = sorted(range(7), key=lambda i: -h[i])[:3]
        z = sum(torch.tensor(h[i], dtype=f64).exp() for i in kept)
        want = [torch.tensor(h[i], dtype=f64).exp() / z if i in kept else 0.0 for i in range(7)]
        assert torch.allclose(g.gates[n], torch.tensor(want, dtype=f64), rtol=0, atol=1e-12)
        assert sorted(g.top_index[n].tolist()) == sorted(kept)
    assert torch.equal((g.gates > 0).sum(1), torch.full((9,), 3))
    assert torch.allclose(g.importance, g.gates.sum(0))
    gate.eval()  # no noise in eval: the clean logits are ranked, and Load counts the examples per expert
    e = gate(x)
    assert torch.equal(e.top_index, (x @ gate.w_gate).topk(3, dim=1).indices)
    assert torch.equal(e.load, (e.gates > 0).sum(0).to(f64))


def test_layer_output_is_the_gated_sum_of_experts_computed_naively():
    torch.manual_seed(1)
    moe = MoE(4, 3, hidden=5, num_experts=6, k=2, bias=True).to(f64)
    with torch.no_grad():
        moe.gate.w_gate.normal_()
        moe.experts.b1.normal_()
        moe.experts.b2.normal_()
    x, noise = torch.randn(2, 7, 4, dtype=f64), torch.randn(14, 6, dtype=f64)
    out = moe(x, noise)
    gates = moe.gate(x.reshape(14, 4), noise).gates
    ex = moe.experts
    for n, xn in enumerate(x.reshape(14, 4)):
        want = torch.zeros(3, dtype=f64)
        for i in range(6):
            expert_i = torch.relu(xn @ ex.w1[i] + ex.b1[i, 0]) @ ex.w2[i] + ex.b2[i, 0]
            want += gates[n, i] * expert_i
        assert torch.allclose(out.y.reshape(14, 3)[n], want, rtol=0, atol=1e-12)
    assert out.y.shape == (2, 7, 3)


def test_load_probabilities_match_a_monte_carlo_estimate():
    """P(x, i) = chance that expert i is in the top k when its own noise is drawn again (the others' kept): the
    brute force redraws it 40,000 times and ranks the whole noisy vector each time."""
    gate, E, k, M = _gate(E=6, k=2, seed=3), 6, 2, 40_000
    x, noise = torch.randn(5, 5, dtype=f64), torch.randn(5, 6, dtype=f64)
    clean = x @ gate.w_gate
    sigma = torch.nn.functional.softplus(x @ gate.w_noise) + 1e-2
    noisy = clean + noise * sigma
    p = prob_in_top_k(clean, noisy, sigma, noisy.topk(k + 1, dim=1).values, k)
    gen = torch.Generator().manual_seed(0)
    fresh = clean[None] + torch.randn(M, 5, E, generator=gen, dtype=f64) * sigma[None]   # [M, N, E]
    h = noisy[None, :, None, :].repeat(M, 1, E, 1)                                        # [M, N, i, E]
    eye = torch.eye(E, dtype=torch.bool)
    h[:, :, eye] = fresh                                                                  # component i redrawn
    in_top = (h.topk(k, dim=-1).indices == torch.arange(E)[None, None, :, None]).any(-1)
    mc = in_top.to(f64).mean(0)
    assert (p - mc).abs().max() < 0.01  # 4 binomial standard errors at M = 40,000 (at most 0.0025 each)
    assert 0.05 < p.min() or p.max() - p.min() > 0.3  # the probabilities are not trivially 0 or 1 everywhere
    gate.train()
    assert torch.allclose(gate(x, noise).load, p.sum(0), rtol=0, atol=1e-12)


def test_zero_initialised_gate_spreads_importance_and_load_uniformly():
    torch.manual_seed(0)
    gate = NoisyTopKGate(8, 8, 2)
    assert not gate.w_gate.any() and not gate.w_noise.any()
    g = gate(torch.randn(20_000, 8))
    share = g.importance / g.importance.sum()
    assert (share - 1 / 8).abs().max() < 0.01  # every expert ~1/8 of the gate mass, from the noise alone
    assert cv_squared(g.importance) < 1e-3 and cv_squared(g.load) < 1e-3
    assert torch.allclose(g.gates.sum(1), torch.ones(20_000))


@torch.no_grad()
def _central_differences(f, w: torch.Tensor, h: float = 1e-6) -> torch.Tensor:
    """df/dw entry by entry (torch's gradcheck spends ~20 s warming up; this takes a fraction of a second)."""
    steps = torch.eye(w.numel(), dtype=w.dtype).mul_(h).view(-1, *w.shape)
    return torch.stack([(f(w + e) - f(w - e)) / (2 * h) for e in steps]).view_as(w)


def test_gradients_reach_the_gate_through_the_kept_softmax_and_through_the_load_loss():
    torch.manual_seed(0)
    moe = MoE(4, 3, hidden=5, num_experts=6, k=2, w_importance=0.0, w_load=0.0).to(f64)
    x, noise = torch.randn(3, 4, dtype=f64), torch.randn(3, 6, dtype=f64)
    moe(x, noise).y.square().sum().backward()
    kept = moe.gate(x, noise).gates > 0
    grad = moe.gate.w_gate.grad
    assert grad[:, kept.any(0)].abs().min() > 0      # the kept experts' logits get gradient through the softmax
    assert not grad[:, ~kept.any(0)].any()            # experts no example kept get none
    assert moe.gate.w_noise.grad.abs().sum() > 0      # the noise scale moves the kept noisy logits too

    torch.manual_seed(2)
    w_gate, w_noise = torch.randn(4, 6, dtype=f64, requires_grad=True), torch.randn(4, 6, dtype=f64, requires_grad=True)

    def load_loss(wg, wn):  # CV² of Load as a function of the two gate weights, the noise draw held fixed
        clean = x @ wg
        sigma = torch.nn.functional.softplus(x @ wn) + 1e-2
        noisy = clean + noise * sigma
        return cv_squared(prob_in_top_k(clean, noisy, sigma, noisy.topk(3, dim=1).values, 2).sum(0))

    gw, gn = torch.autograd.grad(load_loss(w_gate, w_noise), (w_gate, w_noise))
    assert gw.abs().sum() > 0 and gn.abs().sum() > 0
    assert torch.allclose(gw, _central_differences(lambda w: load_loss(w, w_noise), w_gate), rtol=1e-5, atol=1e-9)
    assert torch.allclose(gn, _central_differences(lambda w: load_loss(w_gate, w), w_noise), rtol=1e-5, atol=1e-9)
    only_load = MoE(4, 3, hidden=5, num_experts=6, k=2, w_importance=0.0, w_load=1.0).to(f64)
    with torch.no_grad():
        only_load.gate.w_gate.copy_(w_gate)
        only_load.gate.w_noise.copy_(w_noise)
    only_load(x, noise).loss.backward()  # the layer's load loss sends exactly these gradients to the gate
    assert torch.allclose(only_load.gate.w_gate.grad, gw) and torch.allclose(only_load.gate.w_noise.grad, gn)


def test_layer_loss_combines_the_two_cv_squares_with_their_weights():
    gate = _gate(E=6, k=2)
    moe = MoE(5, 2, hidden=3, num_experts=6, k=2, w_importance=0.3, w_load=0.7).to(f64)
    moe.gate.load_state_dict(gate.state_dict())
    x, noise = torch.randn(11, 5, dtype=f64), torch.randn(11, 6, dtype=f64)
    out, g = moe(x, noise), gate(x, noise)
    assert torch.allclose(out.loss, 0.3 * cv_squared(g.importance) + 0.7 * cv_squared(g.load))
    v = torch.tensor([1.0, 2.0, 3.0, 6.0])
    assert cv_squared(v).item() == pytest.approx(3.5 / 9)  # population variance 3.5, mean 3


def test_k_out_of_range_is_refused():
    with pytest.raises(ValueError, match="k=5"):
        NoisyTopKGate(3, 4, 5)
