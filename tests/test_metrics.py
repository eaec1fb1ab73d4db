"""zoo.metrics (CKA) against the official demo notebook's seeded example and hand-derivable properties."""
import numpy as np
import pytest
import torch

from zoo.metrics import CKA, center_gram, cka, gram_linear, gram_rbf, linear_cka, mean_squared_cca, rbf_cka


@pytest.fixture(scope="module")
def notebook_xy():
    """google-research/representation_similarity/Demo.ipynb: np.random.seed(1337); X ~ N(0,1) [100, 10];
    Y = N(0,1) + X. The notebook prints its results to 5 decimals."""
    rng = np.random.RandomState(1337)
    x = rng.randn(100, 10)
    y = rng.randn(100, 10) + x
    return torch.from_numpy(x), torch.from_numpy(y)


def test_matches_the_official_notebook_to_5_decimals(notebook_xy):
    x, y = notebook_xy
    assert round(cka(gram_linear(x), gram_linear(y)).item(), 5) == 0.55761  # "Linear CKA from Examples"
    assert round(linear_cka(x, y).item(), 5) == 0.55761  # "Linear CKA from Features"
    assert round(rbf_cka(x, y, threshold=0.5).item(), 5) == 0.65483  # "RBF CKA"
    assert round(cka(gram_linear(x), gram_linear(y), debiased=True).item(), 5) == 0.51346  # "(Debiased)"
    assert round(linear_cka(x, y, debiased=True).item(), 5) == 0.51346
    assert round(mean_squared_cca(x, y).item(), 5) == 0.54312  # "Mean Squared CCA Correlation"


def test_cka_of_a_representation_with_itself_is_one(notebook_xy):
    x, _ = notebook_xy
    for value in (linear_cka(x, x), rbf_cka(x, x), linear_cka(x, x, debiased=True), rbf_cka(x, x, debiased=True)):
        assert value.item() == pytest.approx(1.0, abs=1e-12)


def test_invariances_the_paper_requires(notebook_xy):
    x, y = notebook_xy
    q, _ = torch.linalg.qr(torch.randn(10, 10, dtype=torch.float64))
    base = linear_cka(x, y).item()
    assert linear_cka(x @ q, 3.0 * y + 7.0).item() == pytest.approx(base, abs=1e-12)  # orthogonal, scale, shift
    assert rbf_cka(x @ q, 3.0 * y).item() == pytest.approx(rbf_cka(x, y).item(), abs=1e-10)


def test_center_gram_hand_example():
    k = torch.tensor([[2.0, 1.0], [1.0, 2.0]], dtype=torch.float64)
    # H K H with H = I - 1/2: [[0.5, -0.5], [-0.5, 0.5]]
    assert center_gram(k).tolist() == [[0.5, -0.5], [-0.5, 0.5]]
    g = gram_rbf(torch.tensor([[0.0], [1.0], [3.0]]), threshold=1.0)  # squared distances 0,1,9,0,4,0,...
    assert g[0, 1].item() == pytest.approx(np.exp(-1 / (2 * 1.0)))  # median of the 9 squared distances is 1


def test_minibatch_metric_equals_full_batch_linear_cka(notebook_xy):
    x, y = notebook_xy
    metric = CKA(10, 10)
    for i in range(0, 100, 32):  # uneven last batch on purpose
        metric.update(x[i:i + 32].float(), y[i:i + 32].float())
    assert metric.compute().item() == pytest.approx(linear_cka(x.float(), y.float()).item(), abs=1e-6)
    metric.reset()
    metric.update(x, x)
    assert metric.compute().item() == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("offset", [0.0, 3.0, 1e4])
def test_feature_space_linear_cka_equals_the_gram_form(offset):
    # more examples than features: the feature-space form, centred after the products when the means allow it
    # (offset 0 and 3) and before them when a mean dwarfs its spread (1e4); all equal the n x n Gram-matrix form
    g = torch.Generator().manual_seed(0)
    f64 = dict(generator=g, dtype=torch.float64)
    x = torch.randn(400, 24, **f64).relu() + offset
    y = x @ torch.randn(24, 12, **f64) + torch.randn(400, 12, **f64)
    y[:, 0] = 0.0  # a dead unit
    want = cka(gram_linear(x - x.mean(0)), gram_linear(y - y.mean(0)))
    assert linear_cka(x, y).item() == pytest.approx(want.item(), rel=1e-12)
