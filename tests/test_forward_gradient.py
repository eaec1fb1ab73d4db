"""Forward-gradient estimators: exact for a one-dimensional problem, unbiased against the true gradient, and
activity perturbation has far lower variance than weight perturbation (the paper's central claim)."""
import torch
import torch.nn.functional as F

from zoo.models.forward_gradient import activity_perturbed_gradient, weight_perturbed_gradient


def _problem():
    torch.manual_seed(0)
    layer = torch.nn.Linear(20, 5)
    x, y = torch.randn(16, 20), torch.randint(0, 5, (16,))
    return layer, x, y


def _true_grad(layer, x, y):
    layer.zero_grad()
    F.cross_entropy(layer(x), y).backward()
    return {"weight": layer.weight.grad.clone(), "bias": layer.bias.grad.clone()}


def test_one_dimensional_case_by_hand():
    w = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        w.weight.fill_(3.0)
    g = torch.Generator().manual_seed(0)
    est = weight_perturbed_gradient(w, lambda f: f(torch.ones(1, 1)).pow(2).sum(), generator=g)
    v = torch.randn(1, 1, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(est["weight"], 6.0 * v * v)  # dL/dw = 2w = 6; ĝ = (6 v) v


def test_both_estimators_are_unbiased():
    """The mean of n estimates approaches the true gradient; with d Gaussian directions the relative error of
    the mean is about sqrt((d + 1) / n), so 4x that bound fails for any biased (e.g. mis-scaled) estimator."""
    layer, x, y = _problem()
    true = _true_grad(layer, x, y)
    g = torch.Generator().manual_seed(1)
    n = 1500
    fg_w = {k: torch.zeros_like(v) for k, v in true.items()}
    fg_a = {k: torch.zeros_like(v) for k, v in true.items()}
    for _ in range(n):
        for k, v in weight_perturbed_gradient(layer, lambda f: F.cross_entropy(f(x), y), g).items():
            fg_w[k] += v / n
        for k, v in activity_perturbed_gradient(layer, x, lambda z: F.cross_entropy(z, y), g).items():
            fg_a[k] += v / n
    scale = true["weight"].norm()
    d_w, d_a = 20 * 5 + 5, 16 * 5  # perturbed numbers: all weights, or the layer's outputs
    assert (fg_w["weight"] - true["weight"]).norm() < 4 * ((d_w + 1) / n) ** 0.5 * scale
    assert (fg_a["weight"] - true["weight"]).norm() < 4 * ((d_a + 1) / n) ** 0.5 * scale
    assert (fg_a["bias"] - true["bias"]).norm() < 4 * ((d_a + 1) / n) ** 0.5 * true["bias"].norm()
    assert (2 * fg_a["weight"] - true["weight"]).norm() > 4 * ((d_a + 1) / n) ** 0.5 * scale  # the check has teeth


def test_activity_perturbation_has_lower_variance():
    """The paper's central measurement, at a size where it matters: a 200 -> 10 layer on 8 examples perturbs
    2,010 weights (FG-W) but only 80 outputs (FG-A); the squared error of one estimate is ~d ||g||^2."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(200, 10)
    x, y = torch.randn(8, 200), torch.randint(0, 10, (8,))
    true = _true_grad(layer, x, y)["weight"]
    g = torch.Generator().manual_seed(2)

    def mse(estimator) -> float:
        return torch.stack([(estimator()["weight"] - true).pow(2).sum() for _ in range(200)]).mean().item()

    w_err = mse(lambda: weight_perturbed_gradient(layer, lambda f: F.cross_entropy(f(x), y), g))
    a_err = mse(lambda: activity_perturbed_gradient(layer, x, lambda z: F.cross_entropy(z, y), g))
    assert a_err * 5 < w_err
