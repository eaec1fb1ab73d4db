"""GRBM math against brute-force enumeration of the hidden states of a tiny model; the samplers against the exact
marginal distribution of h; the Metropolis-Hastings ratio against its definition; the CD statistics against
autograd; learning, the analysis, the CLI (one process and DDP) and the release round trip on fixture data."""
import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import round_trip

import zoo
from zoo.models.grbm import GMM2DDataModule, GRBMModule
from zoo.models.grbm.analysis import mmd2, tv_to_density
from zoo.models.grbm.model import GRBM, ChainStats, cosine_steps


pytestmark = pytest.mark.usefixtures("one_thread")


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


def test_log_partition_by_enumeration_and_by_quadrature(tiny):
    # brute force: Z = Σ_h ∫ e^{−E(v,h)} dv on a fine grid, for each of the 8 hidden states
    xs = torch.linspace(-14, 14, 561, dtype=torch.float64)
    grid = torch.cartesian_prod(xs, xs)
    e = torch.stack([tiny.energy(grid, h.expand(len(grid), 3)) for h in H_STATES], 1)
    want = torch.logsumexp(-e.flatten(), 0) + 2 * math.log(xs[1] - xs[0])
    with torch.no_grad():
        assert abs(float(tiny.log_partition() - want)) < 1e-6
        assert abs(float(tiny.log_partition_grid(limit=14.0, n=401) - want)) < 1e-4


def test_ais_log_partition_agrees_with_enumeration():
    """AIS over 1,000 temperatures lands within its own standard error (and 0.05 nats) of the exact log Z of a
    model strongly coupled enough that the β = 0 base is far from it (log Z − log Z_0 ≈ 40 nats)."""
    torch.manual_seed(0)
    m = GRBM(5, 10).double()
    with torch.no_grad():
        m.W.mul_(6)
        m.b.normal_()
        m.mu.normal_()
        m.log_var.normal_(0, 0.3)
        exact = m.log_partition()
        est, rel_se = m.log_partition_ais(2000, 1000, torch.Generator().manual_seed(0))
        base = 2.5 * math.log(2 * math.pi) + 0.5 * float(m.log_var.sum()) + float(F.softplus(m.b).sum())
    assert float(exact) - base > 30
    assert abs(float(est - exact)) < max(0.05, 4 * float(rel_se))
    with torch.no_grad():  # too few temperatures: a visibly worse estimate, so the schedule matters
        rough, _ = m.log_partition_ais(2000, 5, torch.Generator().manual_seed(0))
    assert abs(float(rough - exact)) > 0.5


def test_dequantised_images_give_bits_per_dim(fixture_data):
    """With `levels`, evaluation dequantises the images with a fixed noise draw and logs test/bpd, which is
    (log levels − loglik/D)/log 2 of the logged test/nll; a model with H > 20 gets its log Z from AIS."""
    import lightning as L

    L.seed_everything(0)
    module = GRBMModule(hidden=24, data_mean=0.286, data_std=0.353, cd_steps=2, levels=256, ais_chains=20,
                        ais_steps=50, fid_features=None)
    assert module.log_partition() is not None
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, limit_test_batches=1)
    out = trainer.test(module, fixture_data.test_dataloader(), verbose=False)[0]
    assert math.isclose(out["test/bpd"], (math.log(256) + out["test/nll"] / 784) / math.log(2), rel_tol=1e-5)
    again = trainer.test(module, fixture_data.test_dataloader(), verbose=False)[0]
    assert again == out


def _exact_p_h(m: GRBM) -> torch.Tensor:
    """p(h) ∝ ∫ e^{−E(v,h)} dv ∝ exp(bᵀh + ½‖(μ + W h)/σ‖² − ½‖μ/σ‖²)."""
    mean = m.mean_v_given_h(H_STATES)
    logits = H_STATES @ m.b + 0.5 * (mean.pow(2) / m.var).sum(1)
    return torch.softmax(logits.detach(), 0)


def _empirical(h: torch.Tensor) -> torch.Tensor:
    index = (h * torch.tensor([4.0, 2.0, 1.0], dtype=h.dtype)).sum(1).long()
    return torch.bincount(index, minlength=8).double() / len(h)


def _tv(h: torch.Tensor, m: GRBM) -> float:
    return float(0.5 * (_empirical(h) - _exact_p_h(m)).abs().sum())


def test_gibbs_sampler_reaches_the_exact_marginal(tiny):
    g = torch.Generator().manual_seed(0)
    v0 = torch.randn(10000, 2, generator=g, dtype=torch.float64)
    _, h = tiny.gibbs(v0, steps=20, generator=g)
    assert _tv(h, tiny) < 0.03


def test_gibbs_langevin_reaches_the_exact_marginal(tiny):
    g = torch.Generator().manual_seed(1)
    v0 = torch.randn(10000, 2, generator=g, dtype=torch.float64)
    _, h = tiny.gibbs_langevin(v0, steps=20, langevin_steps=40, eta=0.05, anneal=False, generator=g)
    assert _tv(h, tiny) < 0.03


class _PerChainDraws:
    """Stands in for torch.rand / torch.randn: call j draws a table of `rows` rows from seed `seed` + j and returns
    its first n, so chain i gets the same random numbers whether n or more chains run beside it."""

    def __init__(self, draw, rows: int, seed: int):
        self.draw, self.rows, self.seed, self.calls = draw, rows, seed, 0

    def __call__(self, shape, generator=None, device=None, dtype=None):
        self.calls += 1
        g = torch.Generator().manual_seed(self.seed + self.calls)
        return self.draw((self.rows, *shape[1:]), generator=g, dtype=dtype)[: shape[0]]


def _h_draws(m: GRBM, chains: int, seed: int, draws: int = 20480, **kw) -> torch.Tensor:
    """`draws` hidden states from `chains` chains: 20 steps from noise, then every 5th step."""
    g = torch.Generator().manual_seed(seed)
    v, _ = m.gibbs_langevin(torch.randn(chains, 2, generator=g, dtype=torch.float64), 20, generator=g, **kw)
    out = []
    for _ in range(draws // chains):
        v, h = m.gibbs_langevin(v, 5, generator=g, **kw)
        out.append(h)
    return torch.cat(out)


def test_gibbs_langevin_does_not_depend_on_the_number_of_chains(tiny, monkeypatch):
    """What a chain does depends on its own state and random numbers only: (a) with the same draws per chain, the
    first 64 of 2,048 chains follow exactly the trajectories of 64 chains alone (the reference code's gradient of
    the batch-mean energy would move them 32x less); (b) with 64 chains or with 2,048, the unadjusted sampler at the
    paper's T = 1 reaches the exact marginal p(h) of the 2-D model (with the reference code's 1/B drift, the noise
    would swamp the drift and the chains wander off: TV ≈ 0.4)."""
    kw = dict(langevin_steps=40, eta=0.05, anneal=False)
    v0 = torch.randn(2048, 2, generator=torch.Generator().manual_seed(7), dtype=torch.float64) * 3
    runs, randn, rand = {}, torch.randn, torch.rand
    with monkeypatch.context() as patch:
        for n in (64, 2048):
            patch.setattr(torch, "randn", _PerChainDraws(randn, 2048, 0))
            patch.setattr(torch, "rand", _PerChainDraws(rand, 2048, 10**6))
            runs[n] = tiny.gibbs_langevin(v0[:n], steps=30, **kw)
    (v_few, h_few), (v_many, h_many) = runs[64], runs[2048]
    assert torch.equal(h_few, h_many[:64])
    assert torch.allclose(v_few, v_many[:64], rtol=0, atol=1e-12)
    assert not torch.allclose(v_many[:64], v0[:64], atol=0.5)  # and the chains did move
    for n, seed in ((64, 5), (2048, 6)):
        assert _tv(_h_draws(tiny, n, seed, **kw), tiny) < 0.03, n


def _literal_langevin(m: GRBM, v, h, etas, temperature, noise):
    """The K Langevin steps one by one, v ← v − η ∇_v E(v, h) + √(2ηT) ξ."""
    for eta, xi in zip(etas, noise):
        v = v - eta * m.energy_grad_v(v, h) + math.sqrt(2 * eta * temperature) * xi
    return v


def _official_langevin(m: GRBM, v, h, etas, noise):
    """The reference code's K steps: the gradient of the energy averaged over the B rows, the noise √(2η) ξ."""
    for eta, xi in zip(etas, noise):
        v = v - eta * m.energy_grad_v(v, h) / len(v) + math.sqrt(2 * eta) * xi
    return v


def test_langevin_kernel_is_the_composition_of_the_steps(tiny):
    etas, temp = cosine_steps(0.7, 6), 2.0
    v, h = torch.randn(5, 2, dtype=torch.float64), H_STATES[[1, 3, 4, 6, 7]]
    noise = torch.randn(6, 5, 2, dtype=torch.float64)
    A, c, s = tiny.langevin_kernel(etas, temp)
    beta = torch.stack([torch.stack([1 - e / tiny.var for e in etas[k + 1:]]).prod(0) if k + 1 < 6
                        else torch.ones(2, dtype=torch.float64) for k in range(6)])  # Π_{j>k} α_j
    scale = torch.tensor(etas, dtype=torch.float64)[:, None, None].mul(2 * temp).sqrt()
    composed = A * v + c * tiny.mean_v_given_h(h) + (beta[:, None] * scale * noise).sum(0)
    assert torch.allclose(composed, _literal_langevin(tiny, v, h, etas, temp, noise), atol=1e-12)
    # and the spread of v_K given v_0: s² = Σ β_k² 2η_k T
    assert torch.allclose(s.pow(2), (beta.pow(2) * 2 * temp * torch.tensor(etas, dtype=torch.float64)[:, None]).sum(0))


def test_official_step_is_eta_over_batch_at_temperature_batch(tiny):
    """The reference code's step η_ref with B chains (gradient averaged over the batch, noise not) is the
    per-chain step η_ref / B at T = B, move for move; at another B it would be another sampler."""
    B, etas_ref = 5, cosine_steps(20 * float(tiny.var.detach().mean()), 10)
    v, h = torch.randn(B, 2, dtype=torch.float64), H_STATES[[1, 3, 4, 6, 7]]
    noise = torch.randn(10, B, 2, dtype=torch.float64)
    ours = _literal_langevin(tiny, v, h, [e / B for e in etas_ref], B, noise)
    assert torch.allclose(ours, _official_langevin(tiny, v, h, etas_ref, noise), atol=1e-12)
    assert torch.allclose(tiny.langevin_kernel(cosine_steps(20 / B * float(tiny.var.detach().mean()), 10), B)[0],
                          tiny.langevin_kernel([e / B for e in etas_ref], B)[0], atol=1e-12)


def _log_q(m, v_from, h_from, v_to, h_to, etas, temp):
    """log q(v', h' | v, h) by brute force: the mean and variance of the K literal steps by recursion, and
    log p(h' | v') from the enumerated posterior."""
    mean, var, target = v_from, torch.zeros_like(v_from), m.mean_v_given_h(h_from)
    for eta in etas:
        a = 1 - eta / m.var
        mean, var = a * mean + eta / m.var * target, a.pow(2) * var + 2 * eta * temp
    log_v = torch.distributions.Normal(mean, var.sqrt()).log_prob(v_to).sum(1)
    e = torch.stack([m.energy(v_to, hh.expand(len(v_to), 3)) for hh in H_STATES], 1)
    post = torch.log_softmax(-e, 1)
    return log_v + post[torch.arange(len(v_to)), (h_to * torch.tensor([4.0, 2.0, 1.0], dtype=h_to.dtype)).sum(1).long()]


def test_metropolis_hastings_ratio_is_its_definition(tiny):
    etas, temp = cosine_steps(0.27, 4), 1 / 0.3
    g = torch.Generator().manual_seed(3)
    v0, v1 = (torch.randn(6, 2, generator=g, dtype=torch.float64) * 2 for _ in range(2))
    h0, h1 = H_STATES[torch.randint(0, 8, (6,), generator=g)], H_STATES[torch.randint(0, 8, (6,), generator=g)]
    pack = lambda v, h: (v, h, tiny.mean_v_given_h(h), tiny.hidden_logits(v))  # noqa: E731
    kernel = tiny.langevin_kernel(etas, temp)
    with torch.no_grad():
        got = tiny.gibbs_langevin_log_ratio(pack(v0, h0), pack(v1, h1), kernel)
        back = tiny.gibbs_langevin_log_ratio(pack(v1, h1), pack(v0, h0), kernel)
        want = (-tiny.energy(v1, h1) + _log_q(tiny, v1, h1, v0, h0, etas, temp)
                + tiny.energy(v0, h0) - _log_q(tiny, v0, h0, v1, h1, etas, temp))
    assert torch.allclose(got, want, atol=1e-10)
    assert torch.allclose(got, -back, atol=1e-10)  # detailed balance: r(x→x') r(x'→x) = 1


def test_metropolis_adjustment_keeps_the_model_invariant_with_a_huge_step(tiny):
    """η far too large for unadjusted Langevin (α = 1 − η/σ² = −0.8 on the first unit): without the adjustment
    the chain samples a much wider distribution; with it, the exact marginal of h and the exact mean of v."""
    g = torch.Generator().manual_seed(4)
    v0 = torch.randn(10000, 2, generator=g, dtype=torch.float64)
    kw = dict(steps=30, langevin_steps=5, eta=0.9, anneal=False, generator=g)
    v_raw, h_raw = tiny.gibbs_langevin(v0, **kw)
    stats = ChainStats(tiny)
    v_mh, h_mh = tiny.gibbs_langevin(v0, mh_from=0, stats=stats, **kw)
    assert _tv(h_raw, tiny) > 0.08 and v_raw[:, 0].var() > 2.0  # the exact var of v_0 is below 1
    assert _tv(h_mh, tiny) < 0.03
    mean_v = _exact_p_h(tiny) @ tiny.mean_v_given_h(H_STATES).detach()
    assert torch.allclose(v_mh.mean(0), mean_v, atol=0.05)
    assert 0.05 < stats.acceptance < 0.95


def test_chain_statistics_give_the_mean_energy_gradient():
    torch.manual_seed(0)
    m = GRBM(3, 4).double()
    with torch.no_grad():
        m.mu.normal_()
        m.log_var.normal_(0, 0.3)
        m.b.normal_()
    v = torch.randn(7, 3, dtype=torch.float64)
    h = torch.bernoulli(torch.full((7, 4), 0.5, dtype=torch.float64))
    stats = ChainStats(m)
    stats.add(v[:4], h[:4])
    stats.add(v[4:], h[4:])  # rows of another count are folded in too
    got = stats.grad(m)
    m.energy(v, h).mean().backward()
    for k, p in m.named_parameters():
        assert torch.allclose(got[k], p.grad, atol=1e-12), k


def test_cd_gradient_moves_the_model_towards_the_data():
    """With W = 0 the GRBM is N(μ, σ²) and its chains sample it exactly: the CD gradient (positive minus
    negative statistics) must point μ towards the data mean and σ² towards the data variance, W unchanged."""
    torch.manual_seed(0)
    module = GRBMModule(visible=3, hidden=4, image_shape=None, sampler="gibbs", cd_steps=5, fid_features=None)
    with torch.no_grad():
        module.grbm.W.zero_()
    x = 3.0 + 0.5 * torch.randn(512, 3)
    module.training_step((x, None), 0).backward()
    grbm = module.grbm
    assert (grbm.mu.grad < 0).all()  # SGD (θ ← θ − lr·grad) raises μ from 0 towards 3
    assert (grbm.log_var.grad < 0).all()  # and raises σ²: the data's mean (x − μ)² is 9.25 > σ² = 1 at μ = 0 ...
    with torch.no_grad():
        grbm.mu.fill_(3.0)
    grbm.zero_grad()
    module.training_step((x, None), 1).backward()
    assert (grbm.log_var.grad > 0).all()  # ... while at μ = 3 the data variance 0.25 < 1 lowers σ²
    assert grbm.mu.grad.abs().max() < 0.2 and grbm.W.grad.abs().max() < 0.5


def test_learning_a_mixture_raises_the_held_out_likelihood():
    dm = GMM2DDataModule(num_samples=400, test_samples=400, batch_size=100)
    dm.setup()
    torch.manual_seed(0)
    module = GRBMModule(visible=2, hidden=8, image_shape=None, cd_steps=20, langevin_eta=0.1, langevin_temperature=100,
                        mh_from=0, lr=0.05, fid_features=None)

    def nll():
        with torch.no_grad():
            return float((module.grbm.free_energy(dm.test_set.images) + module.grbm.log_partition()).mean())

    before = nll()
    opt = torch.optim.SGD(module.parameters(), lr=0.05)
    for step in range(60):
        x = dm.train_set.images[(step % 4) * 100:(step % 4 + 1) * 100]
        opt.zero_grad()
        module.training_step((x, None), step).backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), 10.0)
        opt.step()
    after = nll()
    assert after < before - 1.0, (before, after)


def test_mixture_data_are_the_papers_and_seeded():
    a, b = GMM2DDataModule("aniso"), GMM2DDataModule("aniso")
    a.setup(), b.setup()
    assert torch.equal(a.train_set.images, b.train_set.images) and a.train_set.images.shape == (1000, 2)
    assert not torch.equal(a.train_set.images, a.test_set.images)
    k = a.train_set.labels
    for c, (mean, std) in enumerate(zip([(-5, -5), (5, -5), (0, 5)], [(1.25, 0.5), (1.25, 0.5), (0.5, 1.25)])):
        pts = a.train_set.images[k == c]
        assert torch.allclose(pts.mean(0), torch.tensor(mean, dtype=torch.float32), atol=0.25)
        assert torch.allclose(pts.std(0), torch.tensor(std, dtype=torch.float32), rtol=0.15)
    xs = torch.linspace(-12, 12, 481)
    grid = torch.cartesian_prod(xs, xs)
    assert abs(float(a.log_prob(grid).exp().sum() * (xs[1] - xs[0]) ** 2) - 1) < 1e-3


def test_sample_measures():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(400, 2, generator=g), torch.randn(400, 2, generator=g)
    assert abs(mmd2(x, y)) < 0.05 and mmd2(x, y + 3) > 0.5
    normal = lambda p: -0.5 * p.pow(2).sum(1) - math.log(2 * math.pi)  # noqa: E731
    tv, floor = tv_to_density(x, normal)
    assert tv < 2.5 * floor and tv_to_density(x + 2, normal)[0] > 0.5


def test_shapes_samples_and_round_trip(tmp_path):
    torch.manual_seed(0)
    module = GRBMModule(hidden=16, data_mean=0.286, data_std=0.353, cd_steps=3, sample_chains=7, sample_steps=4,
                        fid_features=None)
    x = torch.rand(5, 1, 28, 28)
    assert module(x).shape == (5,)
    for sampler in ("gibbs_langevin", "gibbs"):
        s = module.sample(10, sampler)
        assert s.shape == (10, 1, 28, 28) and s.min() >= 0 and s.max() <= 1
    assert torch.equal(module.sample(10, seed=3), module.sample(10, seed=3))
    round_trip(module, tmp_path, x)


def test_diverging_chains_stop_training_with_advice():
    """Unadjusted Langevin with a huge step blows up: training stops at once with what to change, instead of
    carrying NaN weights to the end; the Metropolis-Hastings adjustment rejects those steps and trains on."""
    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(0)) * 5
    kw = dict(visible=2, hidden=8, image_shape=None, cd_steps=5, langevin_eta=1e8, fid_features=None)
    with pytest.raises(FloatingPointError, match="diverged.*mh_from=0"):
        GRBMModule(mh_from=None, **kw).training_step((x, torch.zeros(16)), 0)
    assert torch.isfinite(GRBMModule(mh_from=0, **kw).training_step((x, torch.zeros(16)), 0))


def test_per_channel_standardisation():
    """CelebA's recipe standardises each colour channel with its own mean and std: unit i of channel c is
    (x_i − m_c)/s_c, to_data inverts it, and the density's Jacobian term is Σ_i log s_c(i) = 16 Σ_c log s_c."""
    m, s = [0.5, 0.4, 0.3], [0.25, 0.2, 0.1]
    module = GRBMModule(visible=48, hidden=4, image_shape=[3, 4, 4], data_mean=m, data_std=s, fid_features=None)
    x = torch.rand(2, 3, 4, 4)
    v = module.standardise(x)
    for c in range(3):
        assert torch.allclose(v[:, 16 * c:16 * (c + 1)], ((x[:, c] - m[c]) / s[c]).flatten(1))
    assert torch.allclose(module.to_data(v), x, atol=1e-6)
    assert math.isclose(float(module.log_jacobian()), 16 * sum(map(math.log, s)), rel_tol=1e-6)
    scalar = GRBMModule(visible=48, hidden=4, image_shape=[3, 4, 4], data_mean=0.5, data_std=0.25, fid_features=None)
    assert math.isclose(float(scalar.log_jacobian()), 48 * math.log(0.25), rel_tol=1e-6)
    with pytest.raises(ValueError, match="one per channel"):
        GRBMModule(visible=48, hidden=4, image_shape=[3, 4, 4], data_mean=[0.5, 0.4], fid_features=None)


def test_analyse_images_with_a_tiny_classifier(fixture_data, tmp_path):
    torch.manual_seed(0)
    classifier = zoo.create("cnn", channels=[4], hidden=[8])
    release = zoo.save_pretrained(classifier, tmp_path / "classifier")
    module = GRBMModule(hidden=16, cd_steps=3, sample_chains=20, sample_steps=5, fid_features=str(release),
                        fid_samples=40)
    out = module.analyse(tmp_path, fixture_data)
    m = out["metrics"]
    assert set(m) == {"gibbs_langevin/fid_zoo_cnn", "gibbs_langevin_mh/fid_zoo_cnn", "gibbs/fid_zoo_cnn",
                      "real_heldout/fid_zoo_cnn"}
    assert m["real_heldout/fid_zoo_cnn"] < m["gibbs/fid_zoo_cnn"]  # untrained samples: further from test than real
    assert (tmp_path / "samples_from_noise.png").stat().st_size > 1000
    assert "FID" in next(iter(out["tables"])) and "not Inception" in next(iter(out["tables"]))


def test_analyse_points(tmp_path):
    dm = GMM2DDataModule(num_samples=200, val_samples=100, test_samples=300)
    torch.manual_seed(0)
    module = GRBMModule(visible=2, hidden=8, image_shape=None, sample_chains=100, sample_steps=10, fid_features=None,
                        fid_samples=300, mh_from=0, langevin_eta=0.1, langevin_temperature=100)
    out = module.analyse(tmp_path, dm)
    m = out["metrics"]
    assert {"gibbs_langevin/mmd2", "gibbs/mmd2", "gibbs_langevin/tv_to_model", "gibbs/tv_to_model",
            "exact_draws/tv_to_model", "test/nll", "test/nll_true_mixture"} <= set(m)
    assert m["test/nll"] > m["test/nll_true_mixture"]
    assert (tmp_path / "density.png").stat().st_size > 1000
