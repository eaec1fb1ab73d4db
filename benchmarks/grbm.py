"""GRBM sampler and CD-step speed: ours (zoo.models.grbm) against the official implementation
(lrjconan/GRBM, mirrored as DSL-Lab/GRBM) on the same machine, weights, sizes and sampler settings, in one process.

    git clone https://github.com/DSL-Lab/GRBM /tmp/ref-grbm     # or any checkout of it
    python benchmarks/grbm.py /tmp/ref-grbm [--visible 784 --hidden 4096 --chains 100 --steps 20
                                             --langevin-steps 10 --eta 20 --repeats 3 --device cpu --threads N]

Prints chains·steps/s of Gibbs-Langevin sampling (without and with the Metropolis-Hastings adjustment, and plain
Gibbs), and CD training steps/s (negatives from noise), for each implementation and the ratio ours/official.
Nothing of the official code is copied: it is imported from the checkout given on the command line (its
utils.py imports seaborn for plots only; a stub stands in when seaborn is not installed).
"""
from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import types
from pathlib import Path

import torch

from _compare import Row, ceiling_note, interleaved, product_share
from zoo.models.grbm.model import GRBM, ChainStats, sample_bernoulli


def official_class(checkout: str) -> type:
    path = Path(checkout).resolve()
    if not (path / "grbm.py").is_file():
        raise SystemExit(f"{path} has no grbm.py: pass a checkout of DSL-Lab/GRBM")
    if importlib.util.find_spec("seaborn") is None:
        stub = types.ModuleType("seaborn")
        stub.set_theme = lambda **kwargs: None
        sys.modules["seaborn"] = stub
    # by file, under its own name: `import grbm` would find this script when it runs from benchmarks/run.py
    spec = importlib.util.spec_from_file_location("dsl_lab_grbm", path / "grbm.py")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path))  # for its `from utils import ...`
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path))
    return module.GRBM


def compare(checkout: str, visible: int = 784, hidden: int = 4096, chains: int = 100, steps: int = 20,
            langevin_steps: int = 10, eta: float = 20.0, repeats: int = 3, device: str = "cpu"
            ) -> dict[str, tuple[list[float], list[float]]]:
    """Seconds per call of each case, (ours, official) per repeat, interleaved."""
    Official = official_class(checkout)
    torch.manual_seed(0)
    ours = GRBM(visible, hidden).to(device)
    ref = Official(visible, hidden, CD_step=steps, inference_method="Gibbs-Langevin",
                   Langevin_step=langevin_steps, Langevin_eta=eta, Langevin_adjust_step=steps).to(device)
    ref.load_state_dict(ours.state_dict())  # the same W, b, μ, log σ²
    v0 = torch.randn(chains, visible, device=device)
    eta_max = eta * float(ours.var.detach().mean())
    # the official step with B chains (batch-mean energy gradient, unscaled noise) is ours at η / B and T = B
    glkw = dict(eta=eta_max / chains, temperature=chains)
    K, T = langevin_steps, steps

    def our_cd():
        pos, neg = ChainStats(ours), ChainStats(ours)
        pos.add(v0, sample_bernoulli(ours.p_h_given_v(v0)))
        ours.gibbs_langevin(torch.randn_like(v0), T, K, stats=neg, **glkw)
        gp, gn = pos.grad(ours), neg.grad(ours)
        for k, q in ours.named_parameters():
            q.grad = gp[k] - gn[k]

    cases = {
        "Gibbs-Langevin": (lambda: ours.gibbs_langevin(v0, T, K, **glkw),
                           lambda: ref.Gibbs_Langevin_sampling_vh(v0, T, K, eta_max, adjust_step=T)),
        "Gibbs-Langevin + MH": (lambda: ours.gibbs_langevin(v0, T, K, mh_from=0, **glkw),
                                lambda: ref.Gibbs_Langevin_sampling_vh(v0, T, K, eta_max, adjust_step=0)),
        "Gibbs": (lambda: ours.gibbs(v0, T), lambda: ref.Gibbs_sampling_vh(v0, T)),
        "CD step (Gibbs-Langevin)": (our_cd, lambda: ref.CD_grad(v0)),
    }
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    out = {}
    for name, (fo, fr) in cases.items():
        t = interleaved({"ours": fo, "official": fr}, repeats, warmup=1, sync=sync)
        note = ceiling_note(product_share(fr, 1), "the official sampler") if name == "Gibbs" and device == "cpu" else ""
        out[name] = (t["ours"], t["official"], note)
    return out


TARGETS = {"Gibbs-Langevin": 4.0, "Gibbs": 2.0}


def rows(checkout: str, repeats: int = 3, device: str = "cpu", **sizes) -> list[Row]:
    chains, steps = sizes.get("chains", 100), sizes.get("steps", 20)
    out = []
    for name, (to, tr, note) in compare(checkout, repeats=repeats, device=device, **sizes).items():
        cd = name.startswith("CD")
        unit, n = ("steps/s", 1) if cd else ("chain-steps/s", chains * steps)
        out.append(Row(f"GRBM (V {sizes.get('visible', 784)}, H {sizes.get('hidden', 4096)}, {chains} chains, {steps} "
                       f"steps), {name}", "DSL-Lab/GRBM", unit,
                       [n / v for v in to], [n / v for v in tr], higher_is_better=True, target=TARGETS.get(name),
                       note=note))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkout", help="path of a checkout of DSL-Lab/GRBM (lrjconan/GRBM)")
    p.add_argument("--visible", type=int, default=784)
    p.add_argument("--hidden", type=int, default=4096)
    p.add_argument("--chains", type=int, default=100, help="chains sampled at once (and the CD batch size)")
    p.add_argument("--steps", type=int, default=20, help="sampler steps (and CD steps)")
    p.add_argument("--langevin-steps", type=int, default=10)
    p.add_argument("--eta", type=float, default=20.0,
                   help="the official Langevin_eta, η_max = eta · mean σ² (ours: η_max / chains at T = chains)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads for both (default: torch's)")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    results = compare(a.checkout, a.visible, a.hidden, a.chains, a.steps, a.langevin_steps, a.eta, a.repeats,
                      a.device)
    print(f"V={a.visible} H={a.hidden} chains={a.chains} steps={a.steps} Langevin steps={a.langevin_steps} "
          f"eta={a.eta} device={a.device} torch {torch.__version__} threads={torch.get_num_threads()} "
          f"median of {a.repeats}")
    for name, (t_ours, t_ref, note) in results.items():
        to, tr = statistics.median(t_ours), statistics.median(t_ref)
        if name.startswith("CD"):
            print(f"{name:26s} ours {1 / to:10.2f} steps/s   official {1 / tr:10.2f} steps/s   ratio {tr / to:6.2f}")
        else:
            n = a.chains * a.steps
            print(f"{name:26s} ours {n / to:10.0f} chain-steps/s   official {n / tr:10.0f} chain-steps/s   "
                  f"ratio {tr / to:6.2f}")


if __name__ == "__main__":
    main()
