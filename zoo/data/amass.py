"""AMASS bodies as NASA's preprocessing writes them: one tf.train.Example per frame in TFRecord files named
`train-SS-MM-*` (subject SS, motion MM), read without TensorFlow (zoo.data.tfrecord), for users who have the data
(the official NASA download; AMASS and SMPL need registrations, so nothing here fetches it).

Each frame holds, flattened: `point` [N, 3] (the first half uniform samples in the body's box, the second half near
the surface; N = 200,000 in the official files), `label` [N] (occupancy), `vert` [V, 3] (the posed SMPL vertices,
V = 6,890), `weight` [V, K] (skinning weights, K = 24), `transform` [K, 4, 4] (bone-from-world), `joint` [K, 3] and
`name`. Sizes are read from each record, not assumed. The split is the official leave-one-motion-out within one
subject: every motion but `motion` trains, `motion` is the test set (and, as in the official code, the validation
set too). Batches are the dicts of zoo.data.articulated (`points`, `occupancy`, `transforms`, `root` = joint 0,
`joints`, `vertices`, `vertex_parts` = each vertex's argmax skinning weight, `frame`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from zoo.data._base import InMemoryData, batch_generator
from zoo.data.tfrecord import index_records, parse_example, read_record

FIELDS = ("point", "label", "vert", "weight", "transform", "joint")


def frame_arrays(example: dict, where: str = "record") -> dict[str, np.ndarray]:
    """The fields of one parsed frame, reshaped; a ValueError naming `where` if a field is missing or ill-sized."""
    missing = [k for k in FIELDS if k not in example]
    if missing:
        raise ValueError(f"{where}: no field(s) {missing}; NASA's AMASS records hold {list(FIELDS)} and name")
    t = example["transform"]
    if len(t) % 16:
        raise ValueError(f"{where}: `transform` has {len(t)} values, not a multiple of 16 (K 4 x 4 matrices)")
    K, V, N = len(t) // 16, len(example["vert"]) // 3, len(example["label"])
    sizes = {"point": 3 * N, "vert": 3 * V, "weight": V * K, "joint": 3 * K}
    bad = {k: (len(example[k]), n) for k, n in sizes.items() if len(example[k]) != n}
    if bad or N % 2 or len(example["vert"]) % 3:
        raise ValueError(f"{where}: field sizes do not agree ({bad or 'odd point count'}) for K = {K} parts, "
                         f"V = {V} vertices, N = {N} points")
    return {"point": example["point"].reshape(N, 3), "label": example["label"].astype(np.float32),
            "vert": example["vert"].reshape(V, 3), "weight": example["weight"].reshape(V, K),
            "transform": example["transform"].reshape(K, 4, 4), "joint": example["joint"].reshape(K, 3)}


class NASAFrames(torch.utils.data.Dataset):
    """Frames read on demand from their records. Training items draw `box_points` of the box half and
    `surface_points` of the near-surface half (seeded by the batch's indices); evaluation items take the first
    `eval_points` box samples."""

    def __init__(self, records: list[tuple[Path, int, int]], train: bool, box_points: int, surface_points: int,
                 eval_points: int, seed: int):
        self.records, self.train, self.seed = records, train, seed
        self.box_points, self.surface_points, self.eval_points = box_points, surface_points, eval_points

    def __len__(self) -> int:
        return len(self.records)

    def frame(self, i: int) -> dict[str, np.ndarray]:
        path, offset, length = self.records[i]
        return frame_arrays(parse_example(read_record(path, offset, length)), f"{path}, record at byte {offset - 12}")

    def __getitem__(self, i: int):
        return self.__getitems__([i])

    def __getitems__(self, idx: list[int]) -> dict[str, torch.Tensor]:
        frames = [self.frame(i) for i in idx]
        g = batch_generator(self.seed, idx)
        pts, occ = [], []
        for f in frames:
            half = len(f["label"]) // 2
            if self.train:
                pick = torch.cat([torch.randint(half, (self.box_points,), generator=g),
                                  half + torch.randint(half, (self.surface_points,), generator=g)])
            else:
                pick = torch.arange(min(self.eval_points, half))
            pts.append(torch.from_numpy(f["point"])[pick])
            occ.append(torch.from_numpy(f["label"])[pick])
        stack = lambda k: torch.stack([torch.from_numpy(np.ascontiguousarray(f[k])) for f in frames])  # noqa: E731
        joints = stack("joint").float()
        return {"points": torch.stack(pts).float(), "occupancy": torch.stack(occ), "transforms": stack("transform").float(),
                "root": joints[:, 0], "joints": joints, "vertices": stack("vert").float(),
                "vertex_parts": stack("weight").argmax(-1), "frame": torch.as_tensor(idx)}


class AMASSNASADataModule(InMemoryData):
    """NASA's AMASS frames (module docstring) from `data_dir` or $ZOO_HOME/data/amass-nasa.

    Args:
        subject: the SS of the file names (the official `--subject`).
        motion: the held-out motion MM (the official `--motion`); the others train.
        box_points, surface_points: samples per training frame (official 1,024 + 1,024).
        eval_points: box samples per evaluation frame (official: all 100,000).
    """

    def __init__(self, data_dir: str | None = None, subject: int = 0, motion: int = 0, box_points: int = 1024,
                 surface_points: int = 1024, eval_points: int = 100_000, batch_size: int = 12, seed: int = 0,
                 num_workers: int = 0):
        super().__init__(batch_size=batch_size, seed=seed, num_workers=num_workers)
        self.data_dir, self.subject, self.motion = data_dir, subject, motion
        self.box_points, self.surface_points, self.eval_points = box_points, surface_points, eval_points

    def folder(self) -> Path:
        from zoo._paths import zoo_home

        folder = Path(self.data_dir).expanduser() if self.data_dir else zoo_home() / "data" / "amass-nasa"
        if not any(folder.glob(f"train-{self.subject:02d}-*")):
            raise FileNotFoundError(
                f"{folder}: no NASA AMASS records train-{self.subject:02d}-MM-* there. They come from the official "
                "NASA data download (AMASS and SMPL need registrations); pass --data.init_args.data_dir=FOLDER")
        return folder

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        folder = self.folder()
        splits: dict[bool, list[tuple[Path, int, int]]] = {True: [], False: []}
        for path in sorted(folder.glob(f"train-{self.subject:02d}-*")):
            try:
                m = int(path.name.split("-")[2])
            except (IndexError, ValueError):
                raise ValueError(f"{path}: expected a name train-SS-MM-..., SS the subject and MM the motion") from None
            splits[m != self.motion] += [(path, o, n) for o, n in index_records(path)]
        if not splits[False]:
            raise ValueError(f"{folder}: no records of the held-out motion {self.motion:02d} for subject "
                             f"{self.subject:02d}")
        args = (self.box_points, self.surface_points, self.eval_points, self.seed)
        self.train_set = NASAFrames(splits[True], True, *args)
        self.val_set = self.test_set = NASAFrames(splits[False], False, *args)
