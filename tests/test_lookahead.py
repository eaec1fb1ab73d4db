"""Lookahead (paper 23) in the zoo: the module's optimiser and slow-weight evaluation, the learning-rate sweep on
fixture data (same start, slow weights scored, divergence caught), and the recipe through `zoo fit`."""
import lightning as L
import pytest
import torch


import zoo
from zoo.models.lookahead.model import OPTIMISERS, lr_sweep, make_optimizer, score, sensitivity
from zoo.nn import ConvNet
from zoo.optim import Lookahead, LookaheadSlowWeights


def test_optimizers_are_built_as_named():
    w = [torch.nn.Parameter(torch.zeros(2))]
    built = {n: make_optimizer(n, w, 0.1, k=3, alpha=0.6) for n in OPTIMISERS}
    assert type(built["SGD"]) is torch.optim.SGD and built["SGD"].defaults["momentum"] == 0.9
    assert type(built["Adam"]) is torch.optim.Adam
    for inner in ("SGD", "Adam"):
        la = built[f"Lookahead({inner})"]
        assert isinstance(la, Lookahead) and type(la.optimizer) is type(built[inner]) and (la.k, la.alpha) == (3, 0.6)
    with pytest.raises(ValueError, match="one of"):
        make_optimizer("RMSprop", w, 0.1)


def test_module_trains_with_lookahead_and_evaluates_the_slow_weights(fixture_data, tmp_path):
    L.seed_everything(0)
    m = zoo.create("lookahead_cnn", channels=[4], hidden=[8], optimizer="sgd", lr=0.05, k=3, alpha=0.6)
    seen = []
    m.register_forward_pre_hook(lambda mod, args: seen.append(mod.training) if not mod.training else None)
    trainer = L.Trainer(max_epochs=2, limit_train_batches=4, num_sanity_val_steps=0, logger=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                        callbacks=[LookaheadSlowWeights()])  # given twice: the module's copy replaces it
    trainer.fit(m, fixture_data)
    opt = trainer.optimizers[0]
    assert isinstance(opt, Lookahead) and (opt.k, opt.alpha) == (3, 0.6)
    assert type(opt.optimizer) is torch.optim.SGD and opt.fast_steps == 8
    assert trainer.lr_scheduler_configs[0].scheduler.optimizer is opt  # the cooldown acts on the inner groups
    assert sum(isinstance(c, LookaheadSlowWeights) for c in trainer.callbacks) == 1
    assert seen  # validation ran
    for p in m.parameters():  # the trained model holds the slow weights (8 steps, k = 3: last sync at step 6)
        assert torch.equal(p, opt.state[p]["slow"])


def test_sweep_starts_every_run_alike_scores_slow_weights_and_catches_divergence(fixture_data):
    def make_net():
        return ConvNet(1, 28, [4], [8], 10)

    val = fixture_data.val_dataloader()
    torch.manual_seed(0)
    untrained = score(make_net(), val, torch.device("cpu"))
    lrs = {"SGD": [0.0, 0.05, 1e38], "Lookahead(SGD)": [0.05]}
    rows = lr_sweep(make_net, lrs, fixture_data.train_dataloader(), val, steps=4, k=5, echo=lambda s: None)
    assert [(r["optimizer"], r["lr"]) for r in rows] == [("SGD", 0.0), ("SGD", 0.05), ("SGD", 1e38),
                                                         ("Lookahead(SGD)", 0.05)]
    assert (rows[0]["val_acc"], rows[0]["val_loss"]) == pytest.approx(untrained)  # lr 0: the common start
    # 4 steps < k = 5: the slow weights never moved, so Lookahead is scored on the starting weights
    assert (rows[3]["val_acc"], rows[3]["val_loss"]) == pytest.approx(untrained)
    assert rows[1]["val_loss"] != pytest.approx(untrained[1])  # ... while plain SGD did move
    assert rows[2]["diverged"] and rows[2]["val_loss"] != rows[2]["val_loss"]  # NaN
    assert not any(r["diverged"] for r in rows[:2] + rows[3:])
    s = sensitivity(rows)["SGD"]
    accs = [r["val_acc"] for r in rows[:3]]
    assert (s["best"], s["worst"], s["spread"]) == pytest.approx((max(accs), min(accs), max(accs) - min(accs)))


def test_analyse_runs_the_sweep_into_metrics_table_and_figure(fixture_data, tmp_path):
    m = zoo.create("lookahead_cnn", channels=[4], hidden=[8])
    m.sweep_lrs = {n: [0.01, 0.1] if "SGD" in n else [1e-3, 1e-2] for n in OPTIMISERS}
    m.sweep_steps = 6
    out = m.analyse(tmp_path, fixture_data)
    assert set(out["metrics"]) == {f"sweep/{o}_{k}" for o in ("sgd", "adam", "lookahead_sgd", "lookahead_adam")
                                   for k in ("best", "worst", "spread")}
    assert all(0.0 <= v <= 1.0 for v in out["metrics"].values())
    (title, table), = out["tables"].items()
    assert "after 6 updates" in title and table.count("\n") == 5 and "| Lookahead(Adam) | 0.001: " in table
    assert out["figures"]["lr_sweep.png"].stat().st_size > 1000


def test_release_round_trip_is_bit_exact(tmp_path):
    torch.manual_seed(0)
    m = zoo.create("lookahead_cnn", channels=[4], hidden=[8], k=10, alpha=0.8)
    back = zoo.load(zoo.save_pretrained(m, tmp_path / "release"))
    assert type(back).__name__ == "LookaheadCNN" and (back.hparams.k, back.hparams.alpha) == (10, 0.8)
    for k, v in m.state_dict().items():
        assert torch.equal(v, back.state_dict()[k]), k
