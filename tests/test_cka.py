"""Ten seeds of one CNN as one grouped network (CKA paper, §6.1): each member computes and learns exactly what it
would alone; the layer-correspondence test on hand-made similarities and against zoo.metrics; the recipe through
`zoo fit` (one process and DDP on two); release round trip; the analysis on fixture data."""
import pytest
import torch
import torch.nn.functional as F
from conftest import run_zoo

import zoo
from zoo.metrics import linear_cka, mean_squared_cca, rbf_cka
from zoo.models.cka import GroupedTinyCNN, TinyCNN, correspondence_accuracy, mean_between_members, similarity_matrices
from zoo.models.cka.module import MemberAccuracy

SHAPE = dict(in_channels=1, channels=[2, 3, 4], num_classes=5)


@pytest.mark.parametrize("stem_stride", [1, 2])
def test_member_m_is_the_net_seed_m_gives_and_computes_what_it_computes_alone(stem_stride):
    seeds = [3, 0, 7]
    state = torch.random.get_rng_state()
    grouped = GroupedTinyCNN(seeds, stem_stride=stem_stride, **SHAPE).double()
    assert torch.equal(torch.random.get_rng_state(), state)  # building it leaves the global RNG alone
    x = torch.rand(6, 1, 28, 28, dtype=torch.float64)
    for m, seed in enumerate(seeds):
        torch.manual_seed(seed)
        alone = TinyCNN(stem_stride=stem_stride, **SHAPE).double()
        member = grouped.member(m)
        assert all(torch.equal(a, b) for a, b in zip(alone.state_dict().values(), member.state_dict().values()))
    for mode in (True, False):  # batch statistics (training) and running statistics (eval)
        grouped.train(mode)
        logits, feats = grouped(x), grouped.features(x)
        assert logits.shape == (6, 3, 5) and len(feats) == 9
        for m in range(3):
            net = grouped.member(m).train(mode)
            torch.testing.assert_close(logits[:, m], net(x), rtol=0, atol=1e-12)
            for f, g in zip(feats, net.features(x)):
                torch.testing.assert_close(f[:, m], g, rtol=0, atol=1e-12)


def test_grouped_float32_matches_standalone_members():
    grouped = GroupedTinyCNN(list(range(10)), channels=[8, 16, 32], stem_stride=2).eval()
    x = torch.rand(8, 1, 28, 28)
    out = grouped(x)
    for m in (0, 9):
        torch.testing.assert_close(out[:, m], grouped.member(m).eval()(x), rtol=1e-5, atol=1e-5)


def test_one_training_step_moves_each_member_as_if_it_trained_alone():
    seeds = [1, 2]
    model = zoo.create("cnn_seeds", **SHAPE, seeds=seeds, lr=0.1, momentum=0.9, weight_decay=1e-3).double()
    model.log = lambda *args, **kwargs: None  # no Trainer to log to
    alone = [model.member(m) for m in range(2)]
    x, y = torch.rand(8, 1, 28, 28, dtype=torch.float64), torch.randint(0, 5, (8,))
    opt = model.configure_optimizers()  # no Trainer: the optimiser alone, no schedule
    for _ in range(2):
        opt.zero_grad()
        model.training_step((x, y), 0).backward()
        opt.step()
    for m, net in enumerate(alone):
        o = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
        for _ in range(2):
            o.zero_grad()
            F.cross_entropy(net(x), y).backward()
            o.step()
        for (k, a), b in zip(net.state_dict().items(), model.member(m).state_dict().values()):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-10, msg=k)


def test_training_batches_are_augmented_alike_for_every_member(monkeypatch):
    """shift/flip transform the batch once, before the grouped network: every member sees the same images."""
    import zoo.models.cka.module as mod

    seen = []
    model = zoo.create("cnn_seeds", **SHAPE, seeds=[1, 2], shift=2, flip=True)
    model.log = lambda *args, **kwargs: None
    monkeypatch.setattr(model.net, "forward", lambda x: seen.append(x) or torch.zeros(x.shape[0], 2, 5))
    x = torch.rand(16, 1, 28, 28)
    torch.manual_seed(0)
    model.training_step((x, torch.zeros(16, dtype=torch.long)), 0)
    torch.manual_seed(0)
    want = mod.random_translate(mod.random_hflip(x), 2)
    assert len(seen) == 1 and torch.equal(seen[0], want) and not torch.equal(want, x)
    with pytest.raises(ValueError, match="schedule must be"):
        zoo.create("cnn_seeds", **SHAPE, schedule="step")


def test_member_accuracy_by_hand():
    metric = MemberAccuracy(2)
    logits = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [0.0, 1.0]]])  # [3, 2, 2]
    metric.update(logits, torch.tensor([0, 0, 0]))  # member 0 predicts 0, 0, 1; member 1 predicts 1, 0, 1
    metric.update(logits[:1], torch.tensor([1]))
    torch.testing.assert_close(metric.compute(), torch.tensor([2 / 4, 2 / 4]))


def test_correspondence_accuracy_on_a_hand_made_matrix():
    layers = 3
    sim = torch.zeros(2, layers, 2, layers)
    sim[0, :, 1] = torch.tensor([[0.9, 0.1, 0.0],   # layer 0 of net 0 -> layer 0 of net 1: hit
                                 [0.2, 0.3, 0.8],   # layer 1 -> layer 2: miss
                                 [0.5, 0.1, 0.5]])  # layer 2 ties layers 0 and 2: half a hit
    sim[1, :, 0] = torch.tensor([[0.1, 0.2, 0.0],   # miss
                                 [0.0, 0.7, 0.6],   # hit
                                 [0.0, 0.0, 0.4]])  # hit
    sim[0, :, 0] = sim[1, :, 1] = -torch.eye(layers)  # a net against itself never counts
    acc, per_layer = correspondence_accuracy(sim)
    torch.testing.assert_close(per_layer, torch.tensor([0.5, 0.5, 0.75]))
    torch.testing.assert_close(acc, torch.tensor(1.75 / 3))
    torch.testing.assert_close(mean_between_members(sim), (sim[0, :, 1] + sim[1, :, 0]) / 2)


def test_similarity_matrices_equal_zoo_metrics():
    torch.manual_seed(0)
    n = 30
    reps = [torch.randn(n, 3, 4, 2), torch.randn(n, 3, 50).relu(), torch.randn(n, 3, 7)]  # layer 1 wider than n
    reps[2][:, :, 0] = 2.0  # a constant feature: no direction of its own for CCA
    sims = similarity_matrices(reps, [0.2, 0.5])
    assert set(sims) == {"linear_cka", "rbf_cka_0.2", "rbf_cka_0.5", "cca_r2"}
    for a, i, b, j in [(0, 0, 1, 0), (0, 1, 2, 2), (1, 2, 1, 0), (2, 2, 0, 2), (1, 1, 1, 1)]:
        x, y = reps[i][:, a].flatten(1), reps[j][:, b].flatten(1)
        assert abs(sims["linear_cka"][a, i, b, j] - linear_cka(x, y)) < 1e-6
        assert abs(sims["rbf_cka_0.2"][a, i, b, j] - rbf_cka(x, y, 0.2)) < 1e-6
        assert abs(sims["rbf_cka_0.5"][a, i, b, j] - rbf_cka(x, y, 0.5)) < 1e-6
        x, y = x[:, x.std(0) > 0], y[:, y.std(0) > 0]
        assert abs(sims["cca_r2"][a, i, b, j] - mean_squared_cca(x - x.mean(0), y - y.mean(0))) < 1e-6
    assert sims["cca_r2"][0, 1, 2, 1] == pytest.approx(1.0)  # both wider than n: CCA cannot tell (Theorem 1)


def test_shapes_and_predictions():
    model = zoo.create("cnn_seeds", **SHAPE, seeds=[0, 1, 2, 3], stem_stride=2)
    x = torch.rand(5, 1, 28, 28)
    assert model(x).shape == (5, 4, 5)
    assert model.predict_step((x, None), 0).shape == (5, 4)
    assert [tuple(r.shape) for r in model.representations(x, batch_size=2)] == [
        (5, 4, 2, 14, 14), (5, 4, 2, 14, 14), (5, 4, 3, 7, 7), (5, 4, 3, 7, 7), (5, 4, 3, 7, 7), (5, 4, 4, 4, 4),
        (5, 4, 4, 2, 2), (5, 4, 4, 2, 2), (5, 4, 4)]
    with pytest.raises(ValueError):
        zoo.create("cnn_seeds", optimizer="rmsprop")


def _fixture_data(idx_dir):
    from zoo.data import IDXDataModule

    dm = IDXDataModule("fashion-mnist", data_dir=str(idx_dir), val_size=40, batch_size=32)
    dm.setup()
    return dm


def test_overfits_one_batch(idx_dir):
    x, y = _fixture_data(idx_dir).train_set.__getitems__(list(range(16)))
    torch.manual_seed(0)
    model = zoo.create("cnn_seeds", channels=[4, 8, 8], seeds=[0, 1, 2], stem_stride=2, optimizer="adam", lr=1e-2,
                       weight_decay=0.0)
    model.log = lambda *args, **kwargs: None  # no Trainer to log to
    opt = model.configure_optimizers()
    for _ in range(60):
        opt.zero_grad()
        model.training_step((x, y), 0).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        acc = (model(x).argmax(-1) == y[:, None]).float().mean(0)
    assert acc.min() == 1.0, acc



def test_release_round_trip_is_bit_exact(tmp_path):
    model = zoo.create("cnn_seeds", **SHAPE, seeds=[4, 5], stem_stride=2)
    with torch.no_grad():
        model.net.norms[0].running_mean.uniform_()  # buffers travel too
    folder = zoo.save_pretrained(model, tmp_path / "release")
    loaded = zoo.load(folder)
    x = torch.rand(3, 1, 28, 28)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
    assert torch.equal(model.eval()(x), loaded(x))
    assert loaded.hparams.seeds == [4, 5]


def test_analyse_on_fixture_data(idx_dir, tmp_path):
    dm = _fixture_data(idx_dir)
    model = zoo.create("cnn_seeds", channels=[2, 3, 4], seeds=[0, 1, 2], stem_stride=2)
    out = model.analyse(tmp_path, dm, examples=30)
    m = out["metrics"]
    assert set(m) == {"layer_match/linear_cka", "layer_match/rbf_cka_0.2", "layer_match/rbf_cka_0.4",
                      "layer_match/rbf_cka_0.8", "layer_match/cca_r2", "layer_match/cca_r2_narrow"}  # 7-9: < 30
    assert all(0.0 <= v <= 1.0 for v in m.values())
    (title, table), = out["tables"].items()
    assert "corresponding layer" in title and "| CKA (linear) |" in table and "first 30 test images" in table
    assert out["figures"]["layer_similarity.png"].stat().st_size > 0
    x, _ = dm.test_set.__getitems__(list(range(30)))  # the number agrees with zoo.metrics pair by pair
    reps = model.representations(x)
    hits = []
    for a in range(3):
        for b in range(3):
            if a != b:
                for i in range(9):
                    row = torch.stack([linear_cka(reps[i][:, a], reps[j][:, b]) for j in range(9)])
                    hits.append(float(row.argmax() == i))
    assert m["layer_match/linear_cka"] == pytest.approx(sum(hits) / len(hits), abs=1e-6)
    twins = zoo.create("cnn_seeds", channels=[2, 3, 4], seeds=[5, 5, 5], stem_stride=2).analyse(tmp_path, dm, 30)
    assert twins["metrics"]["layer_match/linear_cka"] == 1.0 and twins["metrics"]["layer_match/rbf_cka_0.4"] == 1.0


def test_reproduce_puts_the_correspondence_test_into_release_and_catalogue(idx_dir, catalog_copy, zoo_home):
    import json

    import yaml

    name = "cka-fmnist"
    env = {"ZOO_CATALOG": str(catalog_copy), "ZOO_HOME": str(zoo_home)}
    out = run_zoo("reproduce", name, "--update-catalog", "--trainer.max_epochs=1",
                  "--trainer.enable_progress_bar=false",
                  "--model.init_args.channels=[2,3,4]", "--model.init_args.seeds=[0,1,2]",
                  f"--data.init_args.data_dir={idx_dir}", "--data.init_args.val_size=40", env=env)
    assert "Finding the corresponding layer of another seed by maximum similarity" in out.stdout
    release = zoo_home / "releases" / name
    measured = json.loads((release / "metrics.json").read_text())
    assert {"test/acc", "test/acc_min", "test/acc_max", "layer_match/linear_cka", "layer_match/cca_r2"} <= set(measured)
    assert measured["test/acc_min"] <= measured["test/acc"] <= measured["test/acc_max"]
    assert yaml.safe_load(catalog_copy.read_text())["checkpoints"][name]["metrics"] == measured
    assert (release / "layer_similarity.png").is_file()
    assert "layer_similarity.png" in (release / "README.md").read_text()
