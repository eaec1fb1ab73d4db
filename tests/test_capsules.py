"""zoo.nn.capsules against hand-derived values: squash, routing (softmax over parents), margin loss, masking."""
import pytest
import torch

from zoo.nn.capsules import (PrimaryCapsules, RoutingCapsules, dynamic_routing, fused_routing, margin_loss,
                             mask_capsules, squash)


def test_squash_hand_values():
    v = squash(torch.tensor([[3.0, 4.0], [0.0, 0.0]]))  # ‖s‖ = 5: length 25/26, direction (0.6, 0.8)
    assert v[0].tolist() == pytest.approx([25 / 26 * 0.6, 25 / 26 * 0.8])
    assert v[1].tolist() == [0.0, 0.0]
    assert squash(torch.tensor([[1e-3, 0.0]])).norm().item() == pytest.approx(1e-6, rel=1e-5)  # ‖s‖² for short s
    z = torch.zeros(1, 4, requires_grad=True)
    squash(z).sum().backward()
    assert torch.isfinite(z.grad).all()


def test_one_routing_iteration_is_a_uniform_vote():
    u_hat = torch.randn(2, 5, 3, 4)
    v, c = dynamic_routing(u_hat, iterations=1)
    assert torch.allclose(c, torch.full((2, 5, 3), 1 / 3))
    assert torch.allclose(v, squash(u_hat.mean(1) * 5 / 3))  # s_j = Σ_i (1/3) û_j|i


def test_routing_softmax_runs_over_parents_and_follows_agreement():
    # two inputs agree on parent 0 (same vote), disagree on parent 1 (opposite votes)
    u_hat = torch.zeros(1, 2, 2, 2)
    u_hat[0, :, 0] = torch.tensor([1.0, 0.0])
    u_hat[0, 0, 1] = torch.tensor([0.0, 1.0])
    u_hat[0, 1, 1] = torch.tensor([0.0, -1.0])
    v, c = dynamic_routing(u_hat, iterations=3)
    assert torch.allclose(c.sum(2), torch.ones(1, 2))  # every input distributes its vote over the parents
    assert (c[0, :, 0] > 0.5).all()  # ...and sends more of it to the parent it agrees with
    assert v[0, 0].norm() > v[0, 1].norm()
    # hand check of iteration 2: b_i0 = û_i0·v_0 with v_0 = squash((1/2)(1,0)+(1/2)(1,0)) = (0.5, 0)
    _, c2 = dynamic_routing(u_hat, iterations=2)
    b0, b1 = 0.5, 0.0  # parent 1 gets s = 0, so v_1 = 0 and no agreement
    assert c2[0, 0, 0].item() == pytest.approx(torch.tensor([b0, b1]).softmax(0)[0].item())


def test_margin_loss_hand_value():
    v = torch.zeros(1, 3, 2)
    v[0, 0, 0] = 0.5  # true class, too short by 0.4
    v[0, 1, 0] = 0.3  # wrong class, too long by 0.2
    want = 0.4**2 + 0.5 * 0.2**2
    assert margin_loss(v, torch.tensor([0])).item() == pytest.approx(want)
    v[0, 0, 0], v[0, 1, 0] = 0.95, 0.05
    assert margin_loss(v, torch.tensor([0])).item() == 0.0
    # per example: the second example's true class (1) is too short by 0.9, the others are 0
    both = torch.cat([v, torch.zeros(1, 3, 2)])
    assert margin_loss(both, torch.tensor([0, 1]), reduction="none").tolist() == pytest.approx([0.0, 0.81])
    assert margin_loss(both, torch.tensor([0, 1])).item() == pytest.approx(0.405)


def test_mask_capsules_true_class_or_longest():
    v = torch.tensor([[[1.0, 1.0], [2.0, 2.0], [0.1, 0.1]]])
    assert mask_capsules(v, torch.tensor([0])).tolist() == [[1.0, 1.0, 0.0, 0.0, 0.0, 0.0]]
    assert mask_capsules(v).tolist() == [[0.0, 0.0, 2.0, 2.0, 0.0, 0.0]]


def test_capsnet_shapes_on_mnist_sized_input():
    primary = PrimaryCapsules(256, capsules=32, dim=8, kernel_size=9, stride=2)
    u = primary(torch.randn(2, 256, 20, 20))
    assert u.shape == (2, 32 * 6 * 6, 8) and (u.norm(dim=-1) < 1).all()
    digits = RoutingCapsules(32 * 6 * 6, 8, 10, 16, iterations=3)
    v, c = digits(u)
    assert v.shape == (2, 10, 16) and c.shape == (2, 1152, 10)
    margin_loss(v, torch.tensor([3, 7])).backward()
    assert digits.W.grad.abs().sum() > 0 and primary.conv.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("iterations", [1, 2, 3])
def test_fused_routing_equals_routing_on_the_predictions(iterations):
    """The layer never builds û; it must give what Procedure 1 gives on û_j|i = W_ij u_i, outputs and
    coupling coefficients, values and gradients."""
    torch.manual_seed(0)
    layer = RoutingCapsules(20, 8, 5, 4, iterations=iterations, init_std=0.3).double()
    u = torch.randn(3, 20, 8, dtype=torch.float64, requires_grad=True)
    v, c = layer(u)
    W = layer.W.detach()
    want_v, want_c = dynamic_routing(torch.einsum("jdki,bik->bijd", W, u), iterations)
    hand = torch.stack([W[1, :, :, 7] @ u[2, 7].detach(), W[4, :, :, 0] @ u[0, 0].detach()])  # û_1|7, û_4|0
    assert torch.allclose(layer.predictions(u)[[2, 0], [7, 0], [1, 4]], hand)
    assert torch.allclose(v, want_v, atol=1e-12) and torch.allclose(c, want_c, atol=1e-12)
    assert torch.allclose(c.sum(2), torch.ones(3, 20, dtype=torch.float64))  # each child's vote over the parents
    g_fused = torch.autograd.grad(v.pow(3).sum(), u)[0]
    g_plain = torch.autograd.grad(want_v.pow(3).sum(), u)[0]
    assert torch.allclose(g_fused, g_plain, atol=1e-12)
    with pytest.raises(ValueError):
        fused_routing(u, layer.W, 0)
