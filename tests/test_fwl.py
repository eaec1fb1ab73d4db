"""Fast Weight Layers (arXiv 2212.02475): the chunked causal linear attention against the explicit sum, the
hand-written backward against autograd, the fast pass against explicitly updated weights at every position,
causality, the slow-only control, dynamic evaluation by hand, the analysis, the release round trip and the checks
on the data it is given."""
import pytest
import torch
import torch.nn.functional as F
from conftest import round_trip
from text_fixture import moby_dick_dir

import zoo
from zoo.data.text import TextDataModule
from zoo.models.fwl import FastWeightBlock, FWLTransformer, causal_linear_attention, dynamic_evaluation
from zoo.models.fwl.module import score_stream, stream_windows

pytestmark = pytest.mark.usefixtures("one_thread")
SMALL = {"vocab_size": 30, "d": 8, "layers": 2, "heads": 2, "context": 16, "chunk": 4}


@pytest.mark.parametrize("chunk", [1, 3, 4, 11, 64])
def test_chunked_linear_attention_is_the_strictly_causal_sum(chunk):
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 11, 3).double(), torch.randn(2, 11, 3).double(), torch.randn(2, 11, 5).double()
    want = torch.zeros(2, 11, 5).double()
    for i in range(11):
        for j in range(i):  # j < i: a position never sees its own gradient
            want[:, i] += (q[:, i] * k[:, j]).sum(-1, keepdim=True) * v[:, j]
    assert torch.allclose(causal_linear_attention(q, k, v, chunk), want, atol=1e-12)


def test_hand_written_backward_equals_autograd():
    torch.manual_seed(1)
    blk = FastWeightBlock(4, 7).double()
    with torch.no_grad():
        blk.alpha.uniform_(0.5, 1.5)
        blk.beta.normal_()
    x, y = torch.randn(3, 6, 4).double(), torch.randint(0, 7, (3, 6))
    s = blk.slow(x)
    for key in ("z1", "z2", "o"):
        s[key].retain_grad()
    # L per window is its mean cross-entropy; summing windows keeps each window's gradient its own
    sum(F.cross_entropy(s["logits"][b], y[b]) for b in range(3)).backward()
    g = blk.gradients(s, y)
    for key in ("z1", "z2", "o"):
        assert torch.allclose(g[key], s[key].grad, atol=1e-12), key


def test_fast_pass_is_the_slow_weights_after_a_gradient_step_on_the_earlier_positions():
    # brute force: at each position i, form every fast weight explicitly from autograd's gradients of the
    # earlier positions' losses and run the layers with them
    torch.manual_seed(2)
    blk = FastWeightBlock(4, 7, chunk=2).double()
    with torch.no_grad():
        blk.eta.copy_(torch.tensor([0.3, 0.2, 0.5, 0.1, 0.4, 0.6]))
    x, y = torch.randn(2, 5, 4).double(), torch.randint(0, 7, (2, 5))
    got = blk(x, y)
    names = ["W1", "b1", "W2", "b2", "alpha", "beta"]
    params = [getattr(blk, n) for n in names]
    for b in range(2):
        for i in range(5):
            if i == 0:
                fast = dict(zip(names, params))
            else:
                loss = F.cross_entropy(blk.slow(x[b:b + 1])["logits"][0, :i], y[b, :i], reduction="sum") / 5
                grads = torch.autograd.grad(loss, params)
                fast = {n: p - e * g for n, p, e, g in zip(names, params, blk.eta, grads)}
            z1 = x[b, i] @ fast["W1"] + fast["b1"]
            z2 = F.relu(z1).square() @ fast["W2"] + fast["b2"]
            n = (z2 - z2.mean()) / (z2.var(unbiased=False) + blk.eps).sqrt()
            want = blk.unembed(fast["alpha"] * n + fast["beta"])
            assert torch.allclose(got[b, i], want, atol=1e-10), (b, i)


def test_logits_never_depend_on_later_tokens():
    torch.manual_seed(3)
    net = FWLTransformer(**SMALL).double().eval()
    with torch.no_grad():
        net.fwl.eta.fill_(0.5)  # a strong fast-weight pass, so that a leak would show
    x = torch.randint(0, 30, (2, 12))
    base = net(x)
    for t in (1, 6, 11):
        other = x.clone()
        other[:, t] = (other[:, t] + 1) % 30
        changed = (net(other) - base).abs().amax((0, 2))
        # rounding differences of a blocked matmul at most; a leak through η = 0.5 would be far larger
        assert changed[:t].max() < 1e-12 and changed[t] > 1e-6, t


def test_fast_pass_changes_the_output_and_zero_step_sizes_give_the_slow_control():
    torch.manual_seed(4)
    net = FWLTransformer(**SMALL).eval()
    slow = FWLTransformer(**SMALL, fast=False).eval()
    slow.load_state_dict(net.state_dict())
    x = torch.randint(0, 30, (2, 9))
    assert not torch.allclose(net(x), slow(x))
    assert torch.allclose(net(x)[:, 0], slow(x)[:, 0])  # the first position has no past to learn from
    with torch.no_grad():
        net.fwl.eta.zero_()
    assert torch.allclose(net(x), slow(x), atol=1e-6)


def test_a_window_longer_than_the_context_is_refused():
    net = FWLTransformer(**SMALL)
    with pytest.raises(ValueError, match="longer than the model's context of 16"):
        net(torch.zeros(1, 17, dtype=torch.long))


@pytest.mark.parametrize("fast", [True, False])
def test_shapes_and_release_round_trip(fast, tmp_path):
    torch.manual_seed(0)
    module = zoo.create("fwl_lm", **SMALL, fast=fast)
    x = torch.randint(0, 30, (2, 7))
    assert module.eval()(x).shape == (2, 7, 30)
    round_trip(module, tmp_path, x)


def test_overfits_one_batch():
    torch.manual_seed(0)
    module = zoo.create("fwl_lm", **SMALL, dropout=0.0)
    x = torch.randint(0, 30, (4, 13))
    opt = torch.optim.Adam(module.parameters(), lr=1e-2)
    for step in range(150):
        loss = F.cross_entropy(module(x[:, :-1]).flatten(0, 1), x[:, 1:].flatten())
        first = loss.item() if step == 0 else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert first > 3.0 and loss.item() < 0.1
    assert not torch.allclose(module.net.fwl.eta, torch.full((6,), 0.01))  # the step sizes are learnt too


def test_dynamic_evaluation_by_hand():
    torch.manual_seed(5)
    net = FWLTransformer(**SMALL, fast=False).double().eval()
    stream = torch.randint(0, 30, (23,))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    got, _ = dynamic_evaluation(net, stream_windows(stream, 5), lr=0.5)
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k  # restored
    twin = FWLTransformer(**SMALL, fast=False).double().eval()
    twin.load_state_dict(before)
    opt = torch.optim.SGD(twin.parameters(), lr=0.5)
    total, count = 0.0, 0
    for i in range(0, 22, 5):
        n = min(5, 22 - i)
        x, y = stream[i:i + n][None], stream[i + 1:i + 1 + n][None]
        loss = F.cross_entropy(twin(x)[0], y[0])  # scored before the step on it
        total, count = total + loss.item() * y.numel(), count + y.numel()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert got[1].sum() == count == 22 and got[0].sum().item() == pytest.approx(total, rel=1e-10)
    static, _ = score_stream(net, stream_windows(stream, 5))
    zero, _ = dynamic_evaluation(net, stream_windows(stream, 5), lr=0.0)
    assert torch.allclose(static, zero) and not torch.allclose(static, got)


def _data(tmp_path, **kw):
    return TextDataModule("moby-dick", data_dir=str(moby_dick_dir(tmp_path)), batch_size=2, eval_batch_size=1,
                          bptt=4, test_fraction=0.3, **kw)


def test_analysis_measures_the_three_evaluations(tmp_path, zoo_home):
    dm = _data(tmp_path)
    torch.manual_seed(6)
    module = zoo.create("fwl_lm", **{**SMALL, "vocab_size": dm.vocab_size}, dynamic_lrs=[0.0, 0.1], tune_tokens=8)
    out = module.analyse(tmp_path, dm)
    m = out["metrics"]
    assert set(m) == {"test/stream_ppl", "test/slow_ppl", "test/fast_cost", "test/dyn_ppl", "test/dyn_lr",
                      "test/dyn_cost"}
    assert m["test/dyn_lr"] in (0.0, 0.1) and m["test/stream_ppl"] != m["test/slow_ppl"]
    assert (tmp_path / "loss_by_position.png").stat().st_size > 0 and len(out["tables"]) == 2
    assert module.net.fwl.fast  # switched back on after the slow-only pass
    slow = zoo.create("fwl_lm", **{**SMALL, "vocab_size": dm.vocab_size}, fast=False, dynamic_lrs=[])
    assert set(slow.analyse(None, dm)["metrics"]) == {"test/stream_ppl"}


def test_a_model_for_another_vocabulary_or_longer_windows_is_refused(tmp_path, monkeypatch, zoo_home):
    dm = _data(tmp_path)
    module = zoo.create("fwl_lm", **SMALL)
    monkeypatch.setattr(module, "_trainer", type("T", (), {"datamodule": dm})())
    with pytest.raises(ValueError, match=f"pass --model.init_args.vocab_size={dm.vocab_size}"):
        module.setup("fit")
    module = zoo.create("fwl_lm", **{**SMALL, "vocab_size": dm.vocab_size, "context": 3})
    monkeypatch.setattr(module, "_trainer", type("T", (), {"datamodule": dm})())
    with pytest.raises(ValueError, match="longer than the model's context"):
        module.setup("fit")
