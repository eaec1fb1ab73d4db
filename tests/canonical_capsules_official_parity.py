"""The converted Canonical Capsules network against the official model itself: canonical-capsules/canonical-capsules'
`AcneAe` (aligner "init", the default configuration), imported at run time from a checkout, with random weights and
random batch-norm statistics after one Adam step (so the optimizer's state is in the file, as in the released
checkpoints), saved as the official `Network._save` writes it ({iter_idx, model, optimizer}); `zoo convert`'s reader
and mapping load it into `CanonicalCapsulesModule`; both canonicalise and reconstruct the same posed clouds in eval
mode; and both compute the training loss (train mode, the official forward with its pose sampler replaced by the same
two poses ours draws). Prints the largest differences. Not part of the suite (it needs the official checkout, which imports scipy
and matplotlib); tests/test_canonical_capsules.py runs it when ZOO_CANONICAL_CAPSULES_CHECKOUT is set.

    python tests/canonical_capsules_official_parity.py --checkout ~/src/canonical-capsules [--indim 3 --points 256]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch


def official_model(checkout: Path, indim: int, points: int):
    """The official AcneAe built from its own config parser (flags as on its command line)."""
    argv = sys.argv
    sys.argv = ["main.py", f"--indim={indim}", f"--num_pts={points}", "--use_cuda=false"]
    for sub in ("", "models", "models/model_utils"):
        sys.path.insert(0, str(checkout / sub))
    try:
        from models.acne_ae import AcneAe
        from config import get_config

        config, _ = get_config()
        return AcneAe(config)
    finally:
        sys.argv = argv


def parity(checkout: Path, indim: int = 3, points: int = 256, batch: int = 3) -> dict[str, float]:
    from zoo._convert import convert_state, read_torch_checkpoint
    from zoo.models.canonical_capsules import CanonicalCapsulesModule

    torch.manual_seed(0)
    official = official_model(checkout, indim, points)
    from loss_util import evaluate_pose  # on the path once official_model ran

    opt = torch.optim.Adam(official.parameters(), 1e-3)
    for p in official.parameters():
        p.grad = torch.randn_like(p) * 1e-3
    opt.step()
    with torch.no_grad():
        for m in official.modules():
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                m.running_mean.normal_(0, 0.3)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.normal_(1, 0.2)
                m.bias.normal_(0, 0.2)
                m.num_batches_tracked.fill_(17)
    ours = CanonicalCapsulesModule(d=indim, n_points=points)
    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / "checkpoint.pth"
        torch.save({"iter_idx": 17, "model": official.state_dict(), "optimizer": opt.state_dict()}, f)
        ours.load_state_dict(convert_state("canonical_capsules", read_torch_checkpoint(f), ours, "parity"),
                             strict=True)
    official.eval(), ours.eval()
    pc = torch.rand(batch, points, indim) - 0.5
    from zoo.models.canonical_capsules.model import random_poses

    R, t = random_poses(batch, indim, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        x_can, ret = official.aligner.forward_align(pc, rt=[R, t])
        att = ret["att_aligner"]
        x = x_can.transpose(2, 1)
        gc, att = official.encoder(x[..., None], att_aligner=att, return_att=True)
        kps = evaluate_pose(x, att).squeeze(-1)
        y = official.decoder(torch.cat([kps[..., None], gc], 1).transpose(2, 1).squeeze(-1))
        posed = (R @ pc.transpose(1, 2) + t).transpose(1, 2)
        our_can, caps = ours.capsules(posed)
        our_y = ours.net.decoder(caps.mu, caps.beta)
    # the training loss: the official sampler replaced by ours, drawing the same two poses in the same order
    import models.acne_ae as official_module

    g = torch.Generator().manual_seed(2)
    poses = [random_poses(batch, indim, generator=g) for _ in range(2)]

    def same_poses(x, random_range=None, return_pose="rt"):
        R, t = poses.pop(0)
        return [R.transpose(1, 2), -R.transpose(1, 2) @ t], R @ x + t

    official_module.trans_pc_random = same_poses

    class Writer:
        def add_scalar(self, *a, **k):
            pass

    official.train(), ours.train()
    with torch.no_grad():
        loss_official = official({"data": {"pc": pc}, "mode": "train", "writer": Writer(), "iter_idx": 1})
        loss_ours = ours.net.losses(pc, generator=torch.Generator().manual_seed(2)).total
    diffs = {"training loss (relative)": abs(loss_official.item() - loss_ours.item()) / abs(loss_official.item()),
             "canonical cloud": (x_can - our_can).abs().max().item(),
             "attention": (att[:, 0, :, :, 0] - caps.A).abs().max().item(),
             "keypoints": (kps - caps.mu).abs().max().item(),
             "descriptors": (gc[..., 0] - caps.beta).abs().max().item(),
             "reconstruction": (y - our_y).abs().max().item()}
    return diffs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkout", required=True, type=Path)
    ap.add_argument("--indim", type=int, default=3)
    ap.add_argument("--points", type=int, default=256)
    a = ap.parse_args()
    for name, d in parity(a.checkout, a.indim, a.points).items():
        print(f"{name}: largest difference {d:.2e}")


if __name__ == "__main__":
    main()
