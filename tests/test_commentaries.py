"""Teaching with Commentaries: the differentiable Adam step against torch.optim.Adam; the unrolled (Alg. 1)
hypergradient against central finite differences; the Neumann-series (Alg. 2) hypergradient against the exact
implicit gradient of a quadratic inner problem; the blend by hand; shapes, the unroll's linear memory, learning on
one batch, the release round trip, and the official retraining protocols that `analyse` follows."""
import math

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from conftest import round_trip

from zoo.models.commentaries import CommentaryBlending, CommentaryWeighting, Student, WeightingTeacher
from zoo.models.commentaries.model import (
    adam_step, blend, blend_coefficients, blended_loss, neumann_hypergradient, saved_tensor_bytes, unroll,
    validation_loss,
)


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_pair(dtype=torch.float64):
    torch.manual_seed(0)
    return Student(channels=(2, 3)).to(dtype), WeightingTeacher(channels=(2, 2)).to(dtype)


def start(student):
    params = {k: p.detach().clone().requires_grad_(True) for k, p in student.named_parameters()}
    return params, {k: b.clone() for k, b in student.named_buffers()}


def test_functional_adam_is_torch_adam():
    torch.manual_seed(0)
    a = torch.randn(4, 3, dtype=torch.float64)
    w = torch.randn(3, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([w], lr=0.1)
    params = {"w": w.detach().clone().requires_grad_(True)}
    state = {"m": [torch.zeros(3, dtype=torch.float64)], "v": [torch.zeros(3, dtype=torch.float64)]}
    for step in range(1, 5):
        opt.zero_grad()
        (a @ w).pow(2).sum().backward()
        opt.step()
        (g,) = torch.autograd.grad((a @ params["w"]).pow(2).sum(), [params["w"]])
        params = adam_step(params, [g], state, step, lr=0.1)
        assert torch.allclose(params["w"], w.detach(), atol=1e-12, rtol=0)


def test_unrolled_hypergradient_matches_finite_differences():
    """d L_V(θ_N(φ)) / dφ through N = 3 second-order Adam steps, along a random direction of the teacher's
    weights, against a central difference of the same computation (float64)."""
    student, teacher = tiny_pair()
    g = torch.Generator().manual_seed(1)
    xs, ys = torch.rand(3, 4, 1, 28, 28, generator=g, dtype=torch.float64), torch.randint(0, 10, (3, 4), generator=g)
    xv, yv = torch.rand(6, 1, 28, 28, generator=g, dtype=torch.float64), torch.randint(0, 10, (6,), generator=g)
    phi = list(teacher.parameters())

    def meta_loss(create_graph: bool) -> torch.Tensor:
        params, buffers = start(student)
        final, _ = unroll(student, params, buffers, xs, ys, lambda x, t: teacher(x, t / 3), 0.05, create_graph)
        return validation_loss(student, final, buffers, xv, yv)

    grads = torch.autograd.grad(meta_loss(True), phi)
    assert sum(float(gr.abs().sum()) for gr in grads) > 1e-6
    direction = [torch.randn(p.shape, generator=g, dtype=p.dtype) for p in phi]
    analytic = sum(float((gr * d).sum()) for gr, d in zip(grads, direction))
    eps = 1e-6
    with torch.no_grad():
        for p, d in zip(phi, direction):
            p.add_(eps * d)
    up = float(meta_loss(False))
    with torch.no_grad():
        for p, d in zip(phi, direction):
            p.sub_(2 * eps * d)
    down = float(meta_loss(False))
    numeric = (up - down) / (2 * eps)
    assert math.isclose(analytic, numeric, rel_tol=1e-5, abs_tol=1e-9), (analytic, numeric)


def test_neumann_hypergradient_converges_to_the_exact_implicit_gradient():
    """L_T = ½θᵀAθ − θᵀBφ, L_V = ½‖θ − c‖²: at θ* = A⁻¹Bφ the implicit gradient is dL_V/dφ = BᵀA⁻¹(θ* − c). The
    K-term series gives Bᵀ α Σ_{k≤K} (I − αA)^k (θ* − c): by hand for K = 1, its error falls with K, and at
    K = 400 it is the exact gradient."""
    g = torch.Generator().manual_seed(0)
    m = torch.randn(5, 5, generator=g, dtype=torch.float64)
    a = m @ m.T + torch.eye(5, dtype=torch.float64)
    b = torch.randn(5, 3, generator=g, dtype=torch.float64)
    c = torch.randn(5, generator=g, dtype=torch.float64)
    phi = torch.randn(3, generator=g, dtype=torch.float64, requires_grad=True)
    theta_star = torch.linalg.solve(a, b @ phi.detach())
    exact = b.T @ torch.linalg.solve(a, theta_star - c)
    alpha = 1.0 / float(torch.linalg.eigvalsh(a).max())

    def hypergrad(terms: int) -> torch.Tensor:
        theta = theta_star.clone().requires_grad_(True)
        train = 0.5 * theta @ a @ theta - theta @ (b @ phi)
        val = 0.5 * (theta - c).pow(2).sum()
        return neumann_hypergradient(train, val, [theta], [phi], alpha, terms)[0]

    v = theta_star - c
    eye = torch.eye(5, dtype=torch.float64)
    assert torch.allclose(hypergrad(1), b.T @ (alpha * (2 * eye - alpha * a) @ v), atol=1e-12)
    errors = [float((hypergrad(k) - exact).norm()) for k in (0, 1, 5, 25, 100)]
    assert all(e2 < e1 for e1, e2 in zip(errors, errors[1:])), errors
    assert torch.allclose(hypergrad(400), exact, atol=1e-8, rtol=0)


def test_blend_mixes_images_and_labels_by_the_class_pair_coefficient():
    phi = torch.tensor([[0.0, 2.0, -1.0], [1.0, -3.0, 0.5], [4.0, 0.0, -2.0]])
    y = torch.tensor([0, 1, 2, 1])
    partner = torch.tensor([2, 0, 3, 1])
    lam = blend_coefficients(phi, y, partner)
    pairs = [(0, 2), (1, 0), (2, 1), (1, 1)]
    want = torch.tensor([1 - 0.5 / (1 + math.exp(-float(phi[i, j]))) for i, j in pairs])
    assert torch.allclose(lam, want)
    assert ((lam >= 0.5) & (lam <= 1)).all()
    x = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 1, 2, 2)
    mixed = blend(x, y, lam, partner)
    assert torch.allclose(mixed[:, 0, 0, 0], want * torch.arange(4.0) + (1 - want) * partner.float())
    logits = torch.randn(4, 3)
    logp = logits.log_softmax(1)
    by_hand = -(want * logp[range(4), y] + (1 - want) * logp[range(4), y[partner]]).mean()
    assert torch.allclose(blended_loss(logits, y, lam, partner), by_hand)
    m = CommentaryBlending(channels=[2, 2]).blend_matrix()  # the official start, φ = −1 for every pair
    assert m.shape == (10, 10) and torch.allclose(m, torch.full((10, 10), 1 - 0.5 / (1 + math.e)))


def test_shapes_and_the_teachers_curriculum_input():
    student = Student()
    assert student.trunk.out_features == 64  # the official 64 features of a 28x28 image at widths 32/64
    x = torch.rand(5, 1, 28, 28)
    assert student(x).shape == (5, 10)
    teacher = WeightingTeacher(channels=(4, 8))
    w0, w1 = teacher(x, 0.0), teacher(x, 1.0)
    assert w0.shape == (5,) and ((w0 > 0) & (w0 < 1)).all()
    assert not torch.allclose(w0, w1)  # the progress t/N is an input
    assert not [k for k in teacher.state_dict() if "running" in k]  # BN on batch statistics only
    assert WeightingTeacher(channels=(4, 8), curriculum=False)(x, 0.3).shape == (5,)


def test_unrolled_graph_memory_grows_linearly_with_the_inner_steps():
    student, teacher = tiny_pair(torch.float32)
    x, y = torch.rand(8, 4, 1, 28, 28), torch.randint(0, 10, (8, 4))
    held = {}
    for n in (2, 4, 8):
        params, buffers = start(student)
        _, held[n] = saved_tensor_bytes(lambda: unroll(student, params, buffers, x[:n], y[:n],
                                                       lambda xb, t: teacher(xb, t / n), 1e-3)[0]["head.weight"])
    first, second = held[4] - held[2], held[8] - held[4]
    assert first > 0 and abs(second - 2 * first) < 0.1 * second, held


def test_teacher_learns_to_lower_the_students_loss_on_one_batch():
    """Overfitting one batch: outer Adam steps on the teacher lower the cross-entropy that the unrolled student
    reaches on the very batch it trains on."""
    student, teacher = tiny_pair(torch.float32)
    g = torch.Generator().manual_seed(2)
    x, y = torch.rand(4, 8, 1, 28, 28, generator=g), torch.randint(0, 10, (4, 8), generator=g)
    opt = torch.optim.Adam(teacher.parameters(), lr=0.05)
    losses = []
    for _ in range(15):
        params, buffers = start(student)
        final, _ = unroll(student, params, buffers, x, y, lambda xb, t: teacher(xb, t / 4), 0.05)
        meta = validation_loss(student, final, buffers, x.flatten(0, 1), y.flatten())
        opt.zero_grad()
        meta.backward()
        opt.step()
        losses.append(float(meta))
    assert min(losses[-3:]) < losses[0] - 0.05, losses


def test_blending_module_fits_one_batch_and_moves_the_matrix(fixture_data):
    L.seed_everything(0)
    module = CommentaryBlending(channels=[8, 16], meta_batch=20, lr=1e-2)
    trainer = L.Trainer(max_steps=30, overfit_batches=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    x, y = fixture_data.train_set.__getitems__(list(range(20)))
    before = F.cross_entropy(module.eval()(x), y)
    trainer.fit(module, datamodule=fixture_data)
    after = F.cross_entropy(module.eval()(x), y)
    assert float(after) < 0.5 * float(before)
    assert (module.blend_matrix() - (1 - 0.5 / (1 + math.e))).abs().max() > 0.005  # hyper steps moved λ


def test_release_round_trips_are_bit_exact(tmp_path):
    x = torch.rand(3, 1, 28, 28)
    weighting = CommentaryWeighting(channels=[4, 8], inner_steps=3, inner_batch=2)
    with torch.no_grad():
        for p in weighting.teacher.parameters():
            p.add_(0.1)
    back = round_trip(weighting, tmp_path / "w", x)
    assert torch.equal(back.teacher(x, 0.5), weighting.teacher(x, 0.5))
    blending = CommentaryBlending(channels=[4, 8])
    with torch.no_grad():
        blending.blend_logits.normal_()
    back = round_trip(blending, tmp_path / "b", x)
    assert torch.equal(back.blend_matrix(), blending.blend_matrix())


def test_weighting_retraining_is_the_official_protocol_epochs_of_batches_with_the_global_step():
    """student_train_weighting.py: epochs over the whole training split in batches of 64 (the last one short), the
    teacher called with the global step, so it runs past the inner loop's N."""
    from zoo.models.commentaries.analysis import train_weighted

    torch.manual_seed(0)
    x, y = torch.rand(10, 1, 28, 28), torch.randint(0, 10, (10,))
    seen: list[tuple[int, int]] = []

    def weight(xb, t):
        seen.append((t, len(xb)))
        return xb.new_ones(len(xb))

    curve = train_weighted(Student(channels=(2, 3)), x, y, weight, 1e-3, epochs=2, batch=4, seed=0, every=2,
                           test=(x, y))
    assert seen == [(0, 4), (1, 4), (2, 2), (3, 4), (4, 4), (5, 2)]
    assert len(curve) == 3 and all(0 <= a <= 1 for a in curve)


def test_blending_retraining_schedule_is_test_mixups_scaled_to_the_run():
    from zoo.models.commentaries.analysis import retraining_lr

    lrs = [retraining_lr(step, 100) for step in range(100)]  # epochs 30, 60 and 80 of the official 100
    assert lrs[0] == lrs[29] == 0.1
    assert lrs[30] == pytest.approx(0.01) and lrs[60] == pytest.approx(1e-3) and lrs[80] == pytest.approx(1e-4)
    assert sorted(set(lrs), reverse=True) == [lrs[0], lrs[30], lrs[60], lrs[80]]


def test_hypergradient_training_term_is_a_new_random_batch(fixture_data):
    """train_mixup.py draws the hyper step's training batch from a new shuffle, not the batch just trained on."""
    module = CommentaryBlending(channels=[4, 8])
    module._train = fixture_data.train_set
    module._generator = lambda *keys: torch.Generator().manual_seed(sum(keys))
    x, y = module.fresh_batch(8)
    everything, labels = fixture_data.train_set.__getitems__(list(range(len(fixture_data.train_set))))
    rows = [int(((everything - xi).abs().flatten(1).sum(1) == 0).nonzero()[0]) for xi in x]
    assert len(set(rows)) == 8 and torch.equal(labels[rows], y)  # distinct training images with their labels
    assert rows != list(range(8))
