"""EM throughput of the zoo's MFA (all components and the whole batch in a few matrix products) against a plain
loop of the same math (NumPy, one component at a time, the same Woodbury formulas), in the same process.

    python benchmarks/dmfa.py [--setting fashion-mnist:20:10] [--setting digits:50:4] [--examples 10000]

One EM iteration = the E-step statistics of every example plus the M-step. Prints examples per second for each,
the ratio, and the largest difference between the parameters the two produce (they compute the same update).
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from _compare import Row
from zoo.models.dmfa.model import MFA
from zoo.data.dequantise import dequantise


def images(name: str, n: int) -> torch.Tensor:
    if name == "digits":
        from sklearn.datasets import load_digits

        x, levels = torch.from_numpy(load_digits().images.astype("float32")) / 16, 17
    else:
        from zoo.data import IDXDataModule

        dm = IDXDataModule(name, download=False, val_size=1)
        dm.setup()
        x, levels = dm.train_set.__getitems__(list(range(len(dm.train_set))))[0], 256
    x = x[:n]
    return dequantise(x, levels, torch.Generator().manual_seed(0))


def loop_em_step(x: np.ndarray, pi, mu, lam, psi, min_variance: float = 1e-6):
    """Ghahramani & Hinton's EM iteration, one component at a time (per-component diagonal Ψ)."""
    n, D = x.shape
    K, q = lam.shape[0], lam.shape[-1]
    logp, ez, minv = np.empty((n, K)), [], []
    for k in range(K):
        ipsi = 1.0 / psi[k]
        m = np.eye(q) + lam[k].T @ (ipsi[:, None] * lam[k])
        mi = np.linalg.inv(m)
        e = x - mu[k]
        proj = (e * ipsi) @ lam[k]
        z = proj @ mi.T
        quad = (e * e * ipsi).sum(1) - (z * proj).sum(1)
        logdet = np.log(psi[k]).sum() + np.linalg.slogdet(m)[1]
        logp[:, k] = np.log(pi[k]) - 0.5 * (D * np.log(2 * np.pi) + logdet + quad)
        ez.append(z)
        minv.append(mi)
    ll = np.logaddexp.reduce(logp, axis=1)
    r = np.exp(logp - ll[:, None])
    new = (np.empty_like(pi), np.empty_like(mu), np.empty_like(lam), np.empty_like(psi))
    for k in range(K):
        z1 = np.concatenate([ez[k], np.ones((n, 1))], 1)
        rz = r[:, k:k + 1] * z1
        xz = x.T @ rz
        zz = z1.T @ rz
        zz[:q, :q] += r[:, k].sum() * minv[k]
        lt = np.linalg.solve(zz, xz.T).T
        nk = r[:, k].sum()
        new[0][k], new[1][k], new[2][k] = nk / n, lt[:, q], lt[:, :q]
        new[3][k] = np.maximum(((r[:, k:k + 1] * x * x).sum(0) - (lt * xz).sum(1)) / nk, min_variance)
    return new, ll.sum()


def measure(data: str, examples: int, K: int, q: int, batch_size: int, repeats: int, device: str = "cpu"
            ) -> tuple[list[float], list[float], float, tuple[int, int]]:
    """Examples/s of one EM iteration per repeat (zoo, NumPy loop; interleaved), the largest difference between
    the parameters the two produce, and the data's shape."""
    x = images(data, examples)
    mfa = MFA(1, K, x.shape[1], q)
    mfa.init_from_data(x[:batch_size], torch.Generator().manual_seed(0))
    start = {k: v.detach().clone() for k, v in mfa.state_dict().items()}
    xn = x.numpy()
    mfa.to(device)
    xd = x.to(device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def ours() -> float:
        mfa.load_state_dict(start)
        sync()
        t = time.perf_counter()
        s = None
        for b in range(0, len(x), batch_size):
            part = mfa.statistics(xd[b:b + batch_size])
            s = part if s is None else {k: s[k] + part[k] for k in s}
        mfa.m_step(s)
        sync()
        return len(x) / (time.perf_counter() - t)

    def loop() -> tuple[float, tuple]:
        args = [start[k][0].numpy() for k in ("weight", "mean", "loading", "psi")]
        t = time.perf_counter()
        new, _ = loop_em_step(xn, *args)
        return len(x) / (time.perf_counter() - t), new

    ours()  # warm-up
    o, lp = [], []
    for _ in range(repeats):  # interleaved, so load drift hits both alike
        o.append(ours())
        rate, new = loop()
        lp.append(rate)
    diff = max(np.abs(getattr(mfa, k).detach()[0].cpu().numpy() - v).max()
               for k, v in zip(("weight", "mean", "loading", "psi"), new))
    return o, lp, diff, tuple(x.shape)


def rows(repeats: int = 3, device: str = "cpu") -> list[Row]:
    o, lp, diff, (n, d) = measure("fashion-mnist", 10000, 20, 10, 1000, repeats, device)
    return [Row(f"MFA EM iteration, {n} x {d}, K 20, q 10, float64", "NumPy loop over components (same math)",
                "examples/s", o, lp, higher_is_better=True, note=f"parameters agree to {diff:.1e}")]


def bench(data: str, examples: int, K: int, q: int, batch_size: int, repeats: int) -> None:
    o, lp, diff, shape = measure(data, examples, K, q, batch_size, repeats)
    mo, ml = statistics.median(o), statistics.median(lp)
    print(f"{data}: {shape[0]} examples x {shape[1]} dims, K={K}, q={q}, float64, median of {repeats}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"  per-component NumPy loop (same math)   {ml:10.0f} examples/s per EM iteration")
    print(f"  zoo MFA (batched over components)      {mo:10.0f} examples/s per EM iteration   ratio {mo / ml:.2f}")
    print(f"  largest parameter difference after one iteration: {diff:.2e}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--setting", action="append", metavar="DATA:K:q",
                   help="data set (fashion-mnist, mnist, digits), components, factors; repeatable "
                        "(default: fashion-mnist:20:10, the dmfa-fmnist first layer, and digits:50:4)")
    p.add_argument("--examples", type=int, default=10000)
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    for setting in a.setting or ["fashion-mnist:20:10", "digits:50:4"]:
        data, K, q = setting.split(":")
        bench(data, a.examples, int(K), int(q), a.batch_size, a.repeats)


if __name__ == "__main__":
    main()
