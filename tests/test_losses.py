"""zoo.losses against values derived by hand."""
import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from zoo.losses import (confidence_penalty, distillation_loss, entropy, nt_xent, soft_nearest_neighbor_loss,
                        transducer_loss)


def test_distillation_loss_hand_value_and_t_squared_scaling():
    s, t = torch.tensor([[0.0, math.log(3.0)]]), torch.tensor([[math.log(3.0), 0.0]])
    # T=1: teacher probs (3/4, 1/4), student log-probs (log 1/4, log 3/4)
    want = -(0.75 * math.log(0.25) + 0.25 * math.log(0.75))
    assert distillation_loss(s, t, 1.0).item() == pytest.approx(want, rel=1e-6)
    # T=2 halves the logits before the softmax and multiplies the loss by 4
    p, q = 3 ** 0.5 / (1 + 3 ** 0.5), 1 / (1 + 3 ** 0.5)
    want2 = -4 * (p * math.log(q) + q * math.log(p))
    assert distillation_loss(s, t, 2.0).item() == pytest.approx(want2, rel=1e-6)


def test_distillation_loss_is_batch_mean_and_teacher_is_constant():
    s = torch.randn(4, 5, requires_grad=True)
    t = torch.randn(4, 5, requires_grad=True)
    per_row = torch.stack([distillation_loss(s[i:i + 1], t[i:i + 1], 3.0) for i in range(4)])
    assert distillation_loss(s, t, 3.0).item() == pytest.approx(per_row.mean().item(), rel=1e-6)
    distillation_loss(s, t, 3.0).backward()
    assert t.grad is None and s.grad is not None


def test_confidence_penalty_hand_values():
    uniform = torch.zeros(2, 4)
    assert entropy(uniform).tolist() == pytest.approx([math.log(4)] * 2)
    assert confidence_penalty(uniform, beta=0.5).item() == pytest.approx(-0.5 * math.log(4))
    confident = torch.tensor([[100.0, 0.0, 0.0, 0.0]])
    assert confidence_penalty(confident, beta=0.5).item() == pytest.approx(0.0, abs=1e-6)
    # hinge: only entropies below Γ cost anything
    assert confidence_penalty(uniform, beta=2.0, hinge=1.0).item() == 0.0
    assert confidence_penalty(confident, beta=2.0, hinge=1.0).item() == pytest.approx(2.0, abs=1e-5)


def test_soft_nearest_neighbor_loss_hand_value():
    # points 0, 1 (class a) and 3 (class b) on a line, T = 1, squared distances 1, 9, 4
    x = torch.tensor([[0.0], [1.0], [3.0]])
    y = torch.tensor([0, 0, 1])
    e = math.exp
    terms = [e(-1) / (e(-1) + e(-9)), e(-1) / (e(-1) + e(-4)), 0.0]  # the class-b point has no partner
    want = -sum(math.log(1e-5 + v) for v in terms) / 3
    assert soft_nearest_neighbor_loss(x, y, temperature=1.0).item() == pytest.approx(want, rel=1e-5)


def test_soft_nearest_neighbor_loss_orders_entanglement_and_has_gradients():
    torch.manual_seed(0)
    y = torch.arange(4).repeat_interleave(8)
    separated = F.one_hot(y, 4).float() * 10 + 0.1 * torch.randn(32, 4)
    mixed = torch.randn(32, 4, requires_grad=True)
    assert soft_nearest_neighbor_loss(separated, y, 1.0) < 0.01 < soft_nearest_neighbor_loss(mixed, y, 1.0)
    soft_nearest_neighbor_loss(mixed, y, 1.0, cosine=True).backward()
    assert torch.isfinite(mixed.grad).all() and mixed.grad.abs().sum() > 0


def test_soft_nearest_neighbor_loss_temperature_step():
    torch.manual_seed(1)
    x, y = torch.randn(24, 3), torch.arange(3).repeat(8)
    T0, h = 2.0, 1e-4

    def at(t: float) -> float:  # the loss as a function of t, with T = T0 / t
        return soft_nearest_neighbor_loss(x.double(), y, T0 / t).item()

    grad = (at(1 + h) - at(1 - h)) / (2 * h)  # dL/dt at t = 1 by central differences
    optimized = soft_nearest_neighbor_loss(x.double(), y, T0, optimize_temperature=True).item()
    assert optimized == pytest.approx(at(1 - 0.1 * grad), rel=1e-6)
    assert optimized < at(1.0)  # a small descent step on t lowers this batch's loss


def _transducer_by_enumeration(logits, y, T, U, blank=0):
    """−log Σ over every alignment: choose which of the T − 1 + U moves emit a label (the rest advance a frame
    by a blank), then the final blank at (T − 1, U)."""
    lp = logits.double().log_softmax(-1)
    paths = []
    for emits in itertools.combinations(range(T - 1 + U), U):
        t = u = 0
        s = lp.new_zeros(())
        for move in range(T - 1 + U):
            if move in emits:
                s, u = s + lp[t, u, y[u]], u + 1
            else:
                s, t = s + lp[t, u, blank], t + 1
        paths.append(s + lp[T - 1, U, blank])
    return -torch.logsumexp(torch.stack(paths), 0)


def test_transducer_loss_sums_every_alignment_with_its_gradient():
    torch.manual_seed(0)
    B, T, U, V = 4, 5, 3, 6
    logits = torch.randn(B, T, U + 1, V, dtype=torch.float64, requires_grad=True)
    y = torch.randint(1, V, (B, U))
    Tl, Ul = torch.tensor([5, 4, 2, 1]), torch.tensor([3, 1, 0, 2])  # padding in both axes; T = 1 emits at once
    got = transducer_loss(logits, y, Tl, Ul, reduction="none")
    want = torch.stack([_transducer_by_enumeration(logits[b], y[b], int(Tl[b]), int(Ul[b])) for b in range(B)])
    assert torch.allclose(got, want, atol=1e-10)
    g_got, = torch.autograd.grad(got.sum(), logits)
    g_want, = torch.autograd.grad(want.sum(), logits)
    assert torch.allclose(g_got, g_want, atol=1e-10)
    assert transducer_loss(logits, y, Tl, Ul).item() == pytest.approx(want.mean().item())
    assert transducer_loss(logits, y, Tl, Ul, reduction="sum").item() == pytest.approx(want.sum().item())


def test_transducer_loss_of_a_certain_alignment_is_zero_and_shapes_are_checked():
    # one frame, one label: emit it, then the blank; with both near-certain the loss is near 0
    logits = torch.full((1, 1, 2, 3), -30.0)
    logits[0, 0, 0, 2] = logits[0, 0, 1, 0] = 30.0
    assert transducer_loss(logits, torch.tensor([[2]]), torch.tensor([1]), torch.tensor([1])).item() < 1e-6
    with pytest.raises(ValueError, match="U\\+1 = 2 label positions but targets have U = 2"):
        transducer_loss(logits, torch.tensor([[2, 1]]), torch.tensor([1]), torch.tensor([2]))


def test_transducer_loss_matches_torchaudio_where_it_loads():
    """torchaudio is not a dependency (its wheels pin one torch); where a build loads, its rnnt_loss must agree."""
    try:
        from torchaudio.functional import rnnt_loss
    except (ImportError, OSError):
        pytest.skip("torchaudio does not load with this torch")
    torch.manual_seed(3)
    logits = torch.randn(3, 7, 5, 6, requires_grad=True)
    y, T, U = torch.randint(1, 6, (3, 4)), torch.tensor([7, 5, 3]), torch.tensor([4, 2, 3])
    ours = transducer_loss(logits, y, T, U, reduction="none")
    theirs = rnnt_loss(logits, y.int(), T.int(), U.int(), blank=0, reduction="none")
    assert torch.allclose(ours, theirs, atol=1e-4)
    g_ours, = torch.autograd.grad(ours.sum(), logits)
    g_theirs, = torch.autograd.grad(theirs.sum(), logits)
    assert torch.allclose(g_ours, g_theirs, atol=1e-5)


def test_nt_xent_is_eq_1_summed_over_both_views():
    """Each of the 2N anchors: −log e^{sim(anchor, partner)/τ} / Σ_{k ≠ anchor} e^{sim(anchor, k)/τ} over the other
    2N − 1 views, cosine similarities; the official objective is the mean over view a's anchors plus the mean over
    view b's. Scaling a projection does not change it (it is L2-normalised first)."""
    torch.manual_seed(0)
    za, zb, tau = torch.randn(5, 4), torch.randn(5, 4), 0.3
    views = F.normalize(torch.cat([za, zb]), dim=1)
    per_anchor = []
    for i in range(10):
        partner = (i + 5) % 10
        den = sum(math.exp(float(views[i] @ views[k]) / tau) for k in range(10) if k != i)
        per_anchor.append(-math.log(math.exp(float(views[i] @ views[partner]) / tau) / den))
    want = sum(per_anchor[:5]) / 5 + sum(per_anchor[5:]) / 5
    assert nt_xent(za, zb, tau).item() == pytest.approx(want, rel=1e-5)
    assert nt_xent(3 * za, 0.5 * zb, tau).item() == pytest.approx(want, rel=1e-5)
    z = za.clone().requires_grad_()
    nt_xent(z, zb, tau).backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


def _nt_xent_rank(rank: int, world: int, store: str, x_a, x_b, weight, out: str) -> None:
    """One rank of test_nt_xent_across_ranks_equals_one_process: its share of the batch, the loss with the
    global negatives, and the weight gradient averaged over ranks as DDP averages it."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    n = x_a.shape[0] // world
    w = weight.clone().requires_grad_()
    mine = slice(rank * n, (rank + 1) * n)
    loss = nt_xent(x_a[mine] @ w, x_b[mine] @ w, 0.5)
    loss.backward()
    grad, mean_loss = w.grad.clone(), loss.detach().clone()
    dist.all_reduce(grad)
    dist.all_reduce(mean_loss)
    if rank == 0:
        torch.save({"loss": mean_loss / world, "grad": grad / world}, out)
    dist.barrier()
    dist.destroy_process_group()


def test_nt_xent_across_ranks_equals_one_process(tmp_path):
    """Two gloo processes with 4 images each, projections all-gathered with their gradients: the mean of their
    losses and their DDP-averaged gradient equal one process's loss and gradient on all 8 images (so a 2-GPU run
    sees the same negatives as one GPU with the doubled batch)."""
    import torch.multiprocessing as mp

    torch.manual_seed(0)
    x_a, x_b, weight = torch.randn(8, 6), torch.randn(8, 6), torch.randn(6, 3)
    w = weight.clone().requires_grad_()
    loss = nt_xent(x_a @ w, x_b @ w, 0.5)
    loss.backward()
    out = tmp_path / "rank0.pt"
    mp.spawn(_nt_xent_rank, args=(2, str(tmp_path / "store"), x_a, x_b, weight, str(out)), nprocs=2, join=True)
    got = torch.load(out, weights_only=True)
    assert got["loss"].item() == pytest.approx(loss.item(), rel=1e-5)
    assert torch.allclose(got["grad"], w.grad, rtol=1e-4, atol=1e-6)
    halves = nt_xent(x_a[:4] @ weight, x_b[:4] @ weight, 0.5)  # without the gather, each rank sees fewer negatives
    assert abs(halves.item() - loss.item()) > 1e-3
