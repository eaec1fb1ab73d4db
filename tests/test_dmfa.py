"""Deep mixtures of factor analysers: the Woodbury log-likelihood against dense Gaussians, the EM statistics and
M-step against a per-component loop of Ghahramani & Hinton's formulas, EM's monotone climb on real digits, the deep
model's density against its explicit collapsed mixture, greedy training through Lightning with its analysis, the CLI
(one process, and DDP on two whose summed statistics must equal one process's), and the release round trip."""
import math

import lightning as L
import pytest
import torch
from conftest import ddp_result, round_trip

import zoo
from zoo.models.dmfa.model import MFA, collapse, dmfa_log_prob, dmfa_sample
from zoo.data.dequantise import dequantise

f64 = torch.float64


def random_mfa(G, K, D, q, shared=False, seed=0) -> MFA:
    g = torch.Generator().manual_seed(seed)
    m = MFA(G, K, D, q, shared_psi=shared)
    with torch.no_grad():
        m.mean.copy_(torch.randn(m.mean.shape, generator=g, dtype=f64))
        m.loading.copy_(torch.randn(m.loading.shape, generator=g, dtype=f64))
        m.psi.copy_(0.1 + torch.rand(m.psi.shape, generator=g, dtype=f64))
        m.weight.copy_(torch.rand(G, K, generator=g, dtype=f64).softmax(-1))
    return m


def dense_components(means, covs, weights):
    """log π_k + log N(x; μ_k, Σ_k) by torch.distributions with the full D x D covariances."""
    return lambda x: torch.distributions.MultivariateNormal(means, covs).log_prob(x[:, None]) + weights.log()


def digits(n: int | None = None) -> torch.Tensor:
    from sklearn.datasets import load_digits

    x = torch.from_numpy(load_digits().images.astype("float32")) / 16
    return dequantise(x[:n], 17, torch.Generator().manual_seed(0))


@pytest.mark.parametrize("shared", [False, True])
def test_log_likelihood_and_posterior_match_dense_gaussians(shared):
    m = random_mfa(1, 3, 7, 2, shared)
    x = torch.randn(11, 7, generator=torch.Generator().manual_seed(1), dtype=f64) * 2
    lam, psi = m.loading[0].detach(), m.psi[0].detach().expand(3, 7)
    cov = lam @ lam.transpose(-1, -2) + torch.diag_embed(psi)
    want = dense_components(m.mean[0].detach(), cov, m.weight[0].detach())(x)
    with torch.no_grad():
        lj, ez, zcov = m.log_joint(x)
        assert torch.allclose(lj[:, 0], want, atol=1e-10)
        assert torch.allclose(m.log_prob(x), want.logsumexp(-1), atol=1e-10)
        # posterior of the factors: E[z | x, k] = Λᵀ C⁻¹ (x − μ), Cov = I − Λᵀ C⁻¹ Λ
        cinv = torch.linalg.inv(cov)
        e = x[:, None] - m.mean[0]
        assert torch.allclose(ez[:, 0], torch.einsum("kdq,kde,bke->bkq", lam, cinv, e), atol=1e-10)
        assert torch.allclose(zcov[0], torch.eye(2, dtype=f64) - lam.transpose(-1, -2) @ cinv @ lam, atol=1e-10)


def test_log_likelihood_stays_exact_when_noise_sits_at_its_floor():
    """Ψ at 1e-6 on most pixels makes M = I + ΛᵀΨ⁻¹Λ very ill-conditioned; for data near the component's subspace
    eᵀΨ⁻¹e and uᵀM⁻¹u are both huge and nearly cancel; an explicit M⁻¹ is off by 0.03 nats here (and by hundreds
    of thousands on a degenerate Fashion-MNIST component), the triangular solves by < 1e-6."""
    g = torch.Generator().manual_seed(6)
    m = random_mfa(1, 2, 600, 5, seed=6)
    with torch.no_grad():
        m.loading.copy_(0.3 * m.loading[..., :1] + 1e-3 * m.loading)  # nearly collinear columns
        m.psi.copy_(torch.where(torch.rand(m.psi.shape, generator=g, dtype=f64) < 0.8, 1e-6, 0.05))
    z = torch.randn(20, 5, 1, generator=g, dtype=f64)
    x = (m.mean[0, 0] + (m.loading[0, 0] @ z)[..., 0]).detach() + 1e-3 * torch.randn(20, 600, generator=g, dtype=f64)
    lam, psi = m.loading[0].detach(), m.psi[0].detach()
    want = dense_components(m.mean[0].detach(), lam @ lam.transpose(-1, -2) + torch.diag_embed(psi),
                            m.weight[0].detach())(x).logsumexp(-1)
    with torch.no_grad():
        got = m.log_prob(x)
    assert want.abs().min() > 1000 and (got - want).abs().max() < 1e-4


def reference_em_step(x, pi, mu, lam, psi):
    """Ghahramani & Hinton's EM iteration written out per component with dense D x D inverses: the new [Λ_k μ_k],
    the Ψ residuals diag Σ_n h_nk (x_n − Λ̃_k E[z̃ | x_n, k]) x_nᵀ per component, and the responsibilities h."""
    K, q = lam.shape[0], lam.shape[-1]
    cov = lam @ lam.transpose(-1, -2) + torch.diag_embed(psi)
    h = dense_components(mu, cov, pi)(x).softmax(-1)
    new_lam, new_mu, resid = [], [], []
    for k in range(K):
        beta = lam[k].T @ torch.linalg.inv(cov[k])
        ez = (x - mu[k]) @ beta.T                                             # E[z | x, k]
        ezz = torch.eye(q, dtype=f64) - beta @ lam[k] + ez[:, :, None] * ez[:, None, :]
        zt = torch.cat([ez, torch.ones(len(x), 1, dtype=f64)], 1)             # z̃ = [z; 1]
        zzt = torch.ones(len(x), q + 1, q + 1, dtype=f64)
        zzt[:, :q, :q], zzt[:, :q, q], zzt[:, q, :q] = ezz, ez, ez
        hk = h[:, k]
        lt = ((hk[:, None, None] * x[:, :, None] * zt[:, None, :]).sum(0)
              @ torch.linalg.inv((hk[:, None, None] * zzt).sum(0)))
        new_lam.append(lt[:, :q])
        new_mu.append(lt[:, q])
        resid.append((hk[:, None] * (x - zt @ lt.T) * x).sum(0))
    return torch.stack(new_lam), torch.stack(new_mu), torch.stack(resid), h


@pytest.mark.parametrize("shared", [False, True])
def test_em_step_matches_ghahramani_hinton_per_component(shared):
    x = digits(150)[:, 18:30]
    m = random_mfa(1, 3, 12, 2, shared)
    with torch.no_grad():
        m.mean.copy_(x[:3][None])
    pi, mu, lam = (t.detach()[0].clone() for t in (m.weight, m.mean, m.loading))
    lam_new, mu_new, resid, h = reference_em_step(x, pi, mu, lam, m.psi.detach()[0].expand(3, 12))
    m.m_step(m.statistics(x))
    assert torch.allclose(m.loading[0], lam_new, atol=1e-9)
    assert torch.allclose(m.mean[0], mu_new, atol=1e-9)
    psi = resid.sum(0, keepdim=True) / len(x) if shared else resid / h.sum(0)[:, None]
    assert torch.allclose(m.psi[0], psi.clamp_min(1e-6), rtol=1e-9)
    assert torch.allclose(m.weight[0], h.mean(0), atol=1e-12)


def test_statistics_add_over_batches_and_em_climbs_on_real_digits():
    x = digits()
    for shared in (False, True):
        m = MFA(1, 6, 64, 3, shared_psi=shared)
        m.init_from_data(x, torch.Generator().manual_seed(0))
        whole, parts = m.statistics(x), [m.statistics(x[i:i + 500]) for i in range(0, len(x), 500)]
        for k, v in whole.items():
            assert torch.allclose(v, sum(p[k] for p in parts), rtol=1e-10, atol=1e-8), k
        lls = []
        for _ in range(12):
            s = m.statistics(x)
            lls.append(s["loglik"].item() / len(x))
            m.m_step(s)
        assert all(b >= a - 1e-9 for a, b in zip(lls, lls[1:])), lls
        assert lls[-1] > lls[0] + 20  # nats per image


def test_deep_density_is_the_collapsed_mixture():
    top, bottom = random_mfa(1, 3, 8, 3, seed=2), random_mfa(3, 4, 3, 2, seed=3)
    x = torch.randn(9, 8, generator=torch.Generator().manual_seed(4), dtype=f64)
    with torch.no_grad():
        deep, flat = dmfa_log_prob(top, bottom, x), collapse(top, bottom).log_prob(x)
        w, mu, psi = top.loading[0], top.mean[0], top.psi[0]
        s = bottom.loading @ bottom.loading.transpose(-1, -2) + torch.diag_embed(bottom.psi)
        means = (mu[:, None] + torch.einsum("cdq,ckq->ckd", w, bottom.mean)).reshape(12, 8)
        covs = (w[:, None] @ s @ w[:, None].transpose(-1, -2) + torch.diag_embed(psi)[:, None]).reshape(12, 8, 8)
        weights = (top.weight[0][:, None] * bottom.weight).reshape(12)
        want = dense_components(means, covs, weights)(x).logsumexp(-1)
        assert torch.allclose(deep, want, atol=1e-9) and torch.allclose(flat, want, atol=1e-9)
        assert torch.allclose(dmfa_log_prob(top, MFA(3, 4, 3, 2), x), top.log_prob(x), atol=1e-10)  # N(0, I) prior
        samples = dmfa_sample(top, bottom, 5000, torch.Generator().manual_seed(5))
    assert torch.allclose(samples.mean(0), (weights[:, None] * means).sum(0), atol=0.15)


@pytest.fixture(scope="module")
def trained_dmfa(tmp_path_factory):
    """A tiny DMFA fitted greedily through a Trainer on sklearn digits: 3 epochs of layer 1, then 3 of layer 2."""
    from zoo.data import DigitsDataModule

    L.seed_everything(0)
    model = zoo.create("dmfa", in_features=64, components=4, factors=3, sub_components=3, sub_factors=1,
                       layer1_epochs=3, levels=17)
    dm = DigitsDataModule(batch_size=300)
    seen = []

    class Snap(L.Callback):
        def on_train_epoch_start(self, trainer, module):
            seen.append({k: v.detach().clone() for k, v in module.state_dict().items()})

    trainer = L.Trainer(max_epochs=6, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[Snap()], default_root_dir=tmp_path_factory.mktemp("t"))
    trainer.fit(model, dm)
    return model, dm, seen, trainer


def test_greedy_layers_through_lightning(trained_dmfa):
    model, dm, seen, trainer = trained_dmfa
    assert trainer.global_step == 6 * math.ceil(len(dm.train_set) / 300)  # one step per E-step batch
    first, at_layer2, end = seen[0], seen[3], model.state_dict()
    assert not torch.equal(first["layer1.mean"], at_layer2["layer1.mean"])          # layer 1 learned ...
    for k in ("layer1.mean", "layer1.loading", "layer1.psi", "layer1.weight"):
        assert torch.equal(at_layer2[k], end[k]), k                                  # ... then stayed frozen
    assert torch.equal(at_layer2["layer2.loading"], torch.zeros_like(end["layer2.loading"]))
    assert not torch.equal(end["layer2.loading"], at_layer2["layer2.loading"]) and bool(end["layer2_initialised"])
    assert {"train/loglik", "train/loglik_layer2", "val/loglik", "val/bpd"} <= set(trainer.callback_metrics)


def test_analyse_table_and_figure(trained_dmfa, tmp_path):
    model, dm, _, _ = trained_dmfa
    out = model.analyse(tmp_path, dm)
    (title, table), = out["tables"].items()
    assert "DMFA (dmfa)" in table and "its first layer alone" in table and "differ by at most" in table
    x = model._test_images(dm)
    with torch.no_grad():
        want = model.bits_per_dim(model.layer1.log_prob(x).mean()).item()
    assert out["metrics"]["test/bpd_layer1"] == pytest.approx(want, abs=1e-9)
    assert (tmp_path / "samples.png").stat().st_size > 1000
    gap = float(table.split("differ by at most ")[1].split(" nats")[0])
    assert gap < 1e-6


def test_analyse_against_a_baseline_release_and_refits(trained_dmfa, tmp_path):
    model, dm, _, _ = trained_dmfa
    dm.setup("fit")
    train = dm.train_set.__getitems__(list(range(len(dm.train_set))))[0]
    torch.manual_seed(0)
    base = zoo.create("mfa", in_features=64, components=5, factors=3, levels=17).fit_in_memory(train, 3, 300)
    model.hparams.compare_with, model.hparams.refit_seeds = str(zoo.save_pretrained(base, tmp_path / "base")), 1
    try:
        out = model.analyse(tmp_path, dm)
    finally:
        model.hparams.compare_with, model.hparams.refit_seeds = None, 0
    x = model._test_images(dm)
    with torch.no_grad():
        gain = (model(x) - base(x)).mean().item()
    assert out["metrics"]["test/loglik_gain_vs_baseline"] == pytest.approx(gain, abs=1e-9)
    assert 0 <= out["metrics"]["seeds/dmfa_better_fraction"] <= 1
    table = out["tables"]["DMFA vs the same-budget MFA over 2 seeds"]
    assert "| 0 (this run) |" in table and f"{gain:+.2f} |" in table and "\n| 1 |" in table
    assert "same-budget shallow MFA" in next(iter(out["tables"].values()))


def test_release_round_trip_is_bit_exact(trained_dmfa, tmp_path):
    model, dm, _, _ = trained_dmfa
    back = round_trip(model, tmp_path, digits(16))
    assert back.hparams.sub_components == 3


def test_resume_from_a_checkpoint_is_exact(tmp_path):
    """Noise and posterior draws are functions of (seed, rank, epoch, batch): stopping after epoch 2 (layer 1)
    and resuming with ckpt_path gives the uninterrupted run's model after layer 2's epochs."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    from zoo.data import DigitsDataModule

    def fit(epochs, root, ckpt_path=None):
        model = zoo.create("dmfa", in_features=64, components=3, factors=2, sub_components=2, sub_factors=1,
                           layer1_epochs=2, levels=17)
        L.Trainer(max_epochs=epochs, logger=False, enable_progress_bar=False, enable_model_summary=False,
                  callbacks=[ModelCheckpoint(dirpath=root, save_last=True)], default_root_dir=root
                  ).fit(model, DigitsDataModule(batch_size=400), ckpt_path=ckpt_path)
        return model.state_dict()

    whole = fit(4, tmp_path / "whole")
    fit(2, tmp_path / "part")
    resumed = fit(4, tmp_path / "resumed", ckpt_path=str(tmp_path / "part" / "last.ckpt"))
    assert whole.keys() == resumed.keys() and all(torch.equal(whole[k], resumed[k]) for k in whole)
    assert bool(resumed["layer2_initialised"])



def test_ddp_statistics_equal_one_process(ddp_runs, idx_dir):
    """Two processes each see half of the fixture's training images; after one epoch their all-reduced
    statistics must have made exactly the M-step that one process makes on all of them. The run is the dmfa
    record's "dmfa-mfa-statistics" in the suite's shared DDP launch, started from papers.mfa_start's release."""
    from zoo.data import IDXDataModule

    run = ddp_result(ddp_runs, "dmfa-mfa-statistics")
    dm = IDXDataModule("fashion-mnist", data_dir=str(idx_dir), val_size=40, batch_size=20)
    dm.setup()
    x = dequantise(dm.train_set.__getitems__(list(range(len(dm.train_set))))[0], None)
    start = zoo.load(run.context["mfa_start"])
    assert run.ckpt["global_step"] == len(dm.train_set) // 2 // 20
    start.layer1.m_step(start.layer1.statistics(x))
    for k, v in start.layer1.state_dict().items():
        assert torch.allclose(run.ckpt["state_dict"][f"layer1.{k}"], v, rtol=1e-9, atol=1e-12), k
