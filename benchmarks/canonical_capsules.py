"""Canonical Capsules training throughput: ours (zoo "canonical_capsules": ACN as four batched products, the K
decoders as grouped convolutions, one batched SVD) against the official implementation (canonical-capsules/
canonical-capsules' `AcneAe`, default configuration: ACN on a [B, C, K, N] tensor, a Python loop over decoders and
over examples in Procrustes), imported at run time from a checkout; nothing of it is in the zoo. Same architecture,
weights (ours converted from theirs, so the losses agree to 1e-7), poses, batch, points and device, in one process.

    git clone https://github.com/canonical-capsules/canonical-capsules /tmp/ccref   # or any copy of it
    python benchmarks/canonical_capsules.py /tmp/ccref [--indim 3 --batch 8 --points 512 --repeats 5]

Prints ms per training step (the six losses on two random poses, backward, Adam) of each, interleaved, and the ratio.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _compare import Row, interleaved, print_rows  # noqa: E402

REF = "canonical-capsules/canonical-capsules"


def row(checkout: Path, indim: int = 3, batch: int = 8, points: int = 512, repeats: int = 5,
        device: str = "cpu") -> Row:
    from canonical_capsules_official_parity import official_model
    from zoo._convert import convert_state, read_torch_checkpoint
    from zoo.models.canonical_capsules import CanonicalCapsulesModule, random_poses

    torch.manual_seed(0)
    official = official_model(checkout, indim, points).to(device)
    ours = CanonicalCapsulesModule(d=indim, n_points=points)
    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / "checkpoint.pth"
        torch.save({"model": official.state_dict()}, f)
        ours.load_state_dict(convert_state("canonical_capsules", read_torch_checkpoint(f), ours, "benchmark"))
    ours.to(device).train(), official.train()
    import models.acne_ae as official_module

    g = torch.Generator().manual_seed(1)

    def same_poses(x, random_range=None, return_pose="rt"):
        R, t = random_poses(len(x), indim, generator=g, device=x.device)
        return [R.transpose(1, 2), -R.transpose(1, 2) @ t], R @ x + t

    official_module.trans_pc_random = same_poses  # both draw poses with torch, off the timed path's numpy

    class Writer:
        def add_scalar(self, *a, **k):
            pass

    pc = torch.rand(batch, points, indim, device=device) - 0.5
    opt_theirs = torch.optim.Adam(official.parameters(), 1e-3)
    opt_ours = torch.optim.Adam(ours.parameters(), 1e-3)

    def theirs() -> None:
        opt_theirs.zero_grad()
        official({"data": {"pc": pc}, "mode": "train", "writer": Writer(), "iter_idx": 1}).backward()
        opt_theirs.step()

    def zoo_step() -> None:
        opt_ours.zero_grad()
        ours.net.losses(pc, generator=g).total.backward()
        opt_ours.step()

    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    t = interleaved({"ours": zoo_step, "theirs": theirs}, repeats, warmup=1, sync=sync)
    return Row(f"Canonical Capsules training step ({indim}-D, batch {batch}, {points} points, K = 10)", REF,
               "ms/step", [1e3 * s for s in t["ours"]], [1e3 * s for s in t["theirs"]])


def rows(ref: Path, repeats: int = 5, device: str = "cpu") -> list[Row]:
    return [row(ref, 3, 8, 512, repeats, device), row(ref, 2, 16, 256, repeats, device)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("reference", type=Path, help="folder of a canonical-capsules/canonical-capsules checkout")
    for name, default in (("indim", 3), ("batch", 8), ("points", 512), ("repeats", 5), ("threads", None)):
        p.add_argument(f"--{name}", type=int, default=default)
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    r = row(a.reference, a.indim, a.batch, a.points, a.repeats, a.device)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; medians of {a.repeats}: "
          f"ours {statistics.median(r.ours):.0f}, theirs {statistics.median(r.theirs):.0f} ms/step")
    print_rows([r])


if __name__ == "__main__":
    main()
