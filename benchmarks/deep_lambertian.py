"""Deep Lambertian Networks' normal conditional (zoo.models.deep_lambertian: every pixel's 3-D Gaussian posterior in
one batched rank-one update, Sherman-Morrison mean and a rank-one square root for the draw) against the same
conditional written as a plain PyTorch loop over pixels (each pixel's 3 x 3 precision formed, solved for the mean and
Cholesky-factored for the draw), the way a direct reading of the model goes. Same network, images and state; the
two posterior means are checked equal first.

    python benchmarks/deep_lambertian.py [--images 16 --size 32 --repeats 3 --threads N]

Prints normal updates/s (one update: every pixel of every image) of each and the ratio.
"""
from __future__ import annotations

import argparse

import torch

from _compare import Row, interleaved, print_rows
from zoo.models.deep_lambertian import DeepLambertianNetwork


def loop_normals(net: DeepLambertianNetwork, v, a, n, ell, g, sample: bool) -> torch.Tensor:
    """The normal conditional, one pixel at a time."""
    m, D = net.prior_given_hidden("normal", g)
    m, D = m.view(-1, net.pixels, 3), D.view(net.pixels, 3)
    obs = net.observed(v)
    out = torch.empty_like(n)
    for b in range(v.shape[0]):
        for i in range(net.pixels):
            u = obs[b, i] * a[b, i] * ell[b] / net.noise_std
            prec = torch.diag(1 / D[i]) + torch.outer(u, u)
            x = m[b, i] / D[i] + obs[b, i] * a[b, i] * v[b, i] / net.noise_std ** 2 * ell[b]
            mean = torch.linalg.solve(prec, x)
            if sample:
                L = torch.linalg.cholesky(prec)
                mean = mean + torch.linalg.solve_triangular(L.T, torch.randn(3, 1), upper=True)[:, 0]
            out[b, i] = mean
    return out


def row(images: int = 16, size: int = 32, repeats: int = 3) -> Row:
    torch.manual_seed(0)
    net = DeepLambertianNetwork(size * size, 64, 64)
    v = torch.rand(images, size * size)
    a = torch.rand(images, size * size) + 0.2
    n = torch.nn.functional.normalize(torch.randn(images, size * size, 3), dim=-1)
    ell = torch.nn.functional.normalize(torch.randn(images, 3), dim=-1)
    g = torch.bernoulli(torch.full((images, 64), 0.5))
    batched = net.sample_normal(v, a, n, ell, g, False, None)
    assert torch.allclose(batched, loop_normals(net, v, a, n, ell, g, False), atol=1e-4), "the two means differ"
    t = interleaved({"batched": lambda: net.sample_normal(v, a, n, ell, g, True, None),
                     "loop": lambda: loop_normals(net, v, a, n, ell, g, True)}, repeats)
    return Row(f"normal conditional, {images} images of {size} x {size}", "plain PyTorch loop over pixels",
               "updates/s", [1 / s for s in t["batched"]], [1 / s for s in t["loop"]], higher_is_better=True,
               note="posterior means agree to 1e-4 (float32)")


def rows(repeats: int = 3, device: str = "cpu") -> list[Row]:
    return [row(repeats=repeats)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=16)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    print_rows([row(a.images, a.size, a.repeats)])


if __name__ == "__main__":
    main()
