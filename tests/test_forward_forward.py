"""Forward-Forward math against hand-derived values, shapes, locality, and overfitting one batch."""
import math

import lightning as L
import pytest
import torch

from zoo.models.forward_forward import ForwardForward
from zoo.models.forward_forward.model import (FFNet, PeerNorm, _ReLUFullGrad, ff_loss, goodness, length_normalise,
                                              overlay_label, overlay_neutral)


def test_overlay_label_writes_one_hot_into_first_pixels():
    x = torch.full((2, 6), 0.5)
    out = overlay_label(x, torch.tensor([2, 0]), num_classes=3)
    assert out.tolist() == [[0, 0, 1, 0.5, 0.5, 0.5], [1, 0, 0, 0.5, 0.5, 0.5]]
    assert x.eq(0.5).all()  # the input is not modified in place


def test_neutral_label_is_uniform():
    out = overlay_neutral(torch.zeros(1, 5), num_classes=4)
    assert out.tolist() == [[0.25, 0.25, 0.25, 0.25, 0.0]]


def test_length_normalise_divides_by_root_mean_square():
    z = torch.tensor([[3.0, 4.0]])  # mean square 12.5
    out = length_normalise(z, eps=0.0)
    assert torch.allclose(out, torch.tensor([[3 / math.sqrt(12.5), 4 / math.sqrt(12.5)]]))
    assert torch.allclose(length_normalise(7 * z), out)  # only the direction survives


def test_goodness_is_sum_of_squares():
    assert goodness(torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 2.0]])).tolist() == [14.0, 4.0]


def test_ff_loss_hand_values():
    theta = 5.0
    # at the threshold both halves have p = 1/2: loss log 2
    assert ff_loss(torch.tensor([5.0]), torch.tensor([5.0]), theta).item() == pytest.approx(math.log(2))
    # G+ = θ+1, G- = θ-2: mean of log(1+e^-1) and log(1+e^-2)
    want = (math.log1p(math.exp(-1)) + math.log1p(math.exp(-2))) / 2
    assert ff_loss(torch.tensor([6.0]), torch.tensor([3.0]), theta).item() == pytest.approx(want, rel=1e-6)


def test_relu_full_grad_forward_is_relu_backward_is_identity():
    z = torch.tensor([-1.0, 2.0], requires_grad=True)
    out = _ReLUFullGrad.apply(z)
    assert out.tolist() == [0.0, 2.0]
    out.sum().backward()
    assert z.grad.tolist() == [1.0, 1.0]


def test_no_gradient_flows_between_layers():
    torch.manual_seed(0)
    net = FFNet(8, [6, 5])
    hs = net(torch.randn(4, 8))
    goodness(hs[1]).sum().backward()  # the second layer's objective only
    assert net.layers[0].weight.grad is None
    assert net.layers[1].weight.grad.abs().sum() > 0


def test_label_goodness_matches_one_pass_per_label():
    torch.manual_seed(0)
    net = FFNet(12, [7, 7, 7]).eval()
    x = torch.rand(3, 12)
    batched = net.label_goodness(x, num_classes=4)
    for c in range(4):
        hs = net(overlay_label(x, torch.full((3,), c), 4))
        assert torch.allclose(batched[:, c], goodness(hs[1]) + goodness(hs[2]), atol=1e-5)  # all but the first


def test_peer_norm_hand_value():
    p = PeerNorm(2, momentum=0.5)
    loss = p(torch.tensor([[2.0, 0.0], [2.0, 0.0]]))  # running mean = 0.5*0 + 0.5*[2, 0] = [1, 0]
    assert p.running_mean.tolist() == [1.0, 0.0]
    assert loss.item() == pytest.approx(0.25)  # ((0.5-1)^2 + (0.5-0)^2)/2


def test_forward_shapes_and_classifiers():
    m = ForwardForward(in_features=64, hidden=[20, 30, 40], num_classes=10).eval()
    x = torch.rand(5, 1, 8, 8)
    assert m(x).shape == (5, 10)
    assert m.linear_logits(x).shape == (5, 10)
    assert m.classifier.in_features == 70  # all but the first hidden layer


def test_negative_labels_are_wrong_and_reproducible():
    m = ForwardForward(in_features=64, hidden=[8], num_classes=10, seed=3)
    y = torch.arange(10).repeat(50)
    a, b = m._negative_labels(y), m._negative_labels(y)
    assert (a != y).all() and torch.equal(a, b)
    assert len(set(a.tolist())) == 10


def test_overfits_one_batch():
    """One fixed batch of real digits, 150 Lightning steps (fresh negative labels each step): both test-time
    classifiers get every example right."""
    from torch.utils.data import DataLoader, TensorDataset

    from zoo.data import DigitsDataModule

    dm = DigitsDataModule(batch_size=32)
    dm.setup()
    x, y = next(iter(dm.train_dataloader()))
    L.seed_everything(0)
    m = ForwardForward(in_features=64, hidden=[200, 200], num_classes=10, lr=0.01, peer_norm=0.0, cooldown=False)
    trainer = L.Trainer(max_epochs=150, enable_progress_bar=False, enable_model_summary=False, logger=False,
                        enable_checkpointing=False)
    trainer.fit(m, DataLoader(TensorDataset(x, y), batch_size=32))
    m.eval()
    with torch.no_grad():
        assert (m(x).argmax(1) == y).float().mean() == 1.0
        assert (m.linear_logits(x).argmax(1) == y).float().mean() == 1.0


def test_goodness_is_float32_under_bf16_autocast():
    """bf16 cannot resolve G ≈ θ ≈ N for thousands of units (its spacing near 2000 is 16): goodness and the
    length normalisation run in float32 under autocast. (Trained on digits for 20 epochs, bf16-mixed then
    reaches the float32 run's validation accuracy; before this it stayed below chance.)"""
    torch.manual_seed(0)
    net = FFNet(784, [2000]).eval()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h = net(torch.rand(8, 784))[0]
        g = goodness(h)
        z = length_normalise(h)
    assert h.dtype == torch.bfloat16 and g.dtype == torch.float32
    assert torch.equal(g, h.float().pow(2).sum(-1))  # accumulated in float32, not rounded to bf16 steps
    assert z.dtype == torch.bfloat16
    assert torch.allclose(z.float().pow(2).mean(-1), torch.ones(8), atol=2e-2)
