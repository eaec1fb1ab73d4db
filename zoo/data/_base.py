"""In-memory image-classification DataModules: batched fetching and epoch-seeded shuffling.

Shuffling is a function of (seed, epoch) only, so a run resumed with `--ckpt_path last` sees exactly
the batches an uninterrupted run would; under DDP Lightning swaps in its DistributedSampler, which is
seeded the same way.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, TypeVar

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, RandomSampler

from zoo._paths import zoo_home

T = TypeVar("T")


class ImageArrays(Dataset):
    """Images (integers, divided by `scale` when fetched; or any float arrays, scale 1) kept in memory with their
    labels; `__getitems__` returns a whole float batch in one indexing op."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, scale: float):
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels, self.scale = images, labels.long(), scale

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[i].float() / self.scale, self.labels[i]

    def __getitems__(self, idx: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        i = torch.as_tensor(idx)
        return self.images[i].float() / self.scale, self.labels[i]

    def subset(self, keep: torch.Tensor) -> "ImageArrays":
        """The examples at indices `keep`, as another ImageArrays."""
        return ImageArrays(self.images[keep], self.labels[keep], self.scale)


class Rows(Dataset):
    """Rows x [N, ...] (features, token sequences), targets y [N, ...] and any further per-row tensors in memory;
    `__getitems__` returns a whole batch in one indexing op."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, *more: torch.Tensor):
        if any(len(t) != len(x) for t in (y, *more)):
            raise ValueError(f"{len(x)} rows but {[len(t) for t in (y, *more)]} targets")
        self.x, self.y, self.more = x, y, more

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return (self.x[i], self.y[i], *(t[i] for t in self.more))

    def __getitems__(self, idx: list[int]):
        i = torch.as_tensor(idx)
        return (self.x[i], self.y[i], *(t[i] for t in self.more))


def _batch_as_is(batch: Any) -> Any:
    return batch


class EpochSampler(RandomSampler):
    """A random permutation seeded by `seed + epoch`; Lightning calls `set_epoch` before each epoch."""

    def __init__(self, data_source: Dataset, seed: int):
        super().__init__(data_source)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        yield from torch.randperm(len(self.data_source), generator=g).tolist()


class LengthBuckets(IterableDataset):
    """Batches of items of similar length, so little compute goes to padding: the items sorted by `key` (their
    length first) and cut into batches of `batch_size`; in training the batch order is shuffled by (seed, epoch).
    Each of `world` processes takes every world-th batch (the count cut to a multiple of `world`, so that all
    processes take the same number of steps), each made by `collate`. An IterableDataset: Lightning does not
    re-sample it under DDP."""

    def __init__(self, items: list, batch_size: int, shuffle: bool, seed: int = 0, world: int = 1, rank: int = 0,
                 epoch: Callable[[], int] = lambda: 0, *, key: Callable[[Any], Any], collate: Callable[[list], Any],
                 what: str = "items"):
        order = sorted(range(len(items)), key=lambda i: key(items[i]))
        self.batches = [[items[i] for i in order[s:s + batch_size]] for s in range(0, len(order), batch_size)]
        self.shuffle, self.seed, self.world, self.rank, self.epoch = shuffle, seed, world, rank, epoch
        self.collate = collate
        if len(self.batches) < world:
            raise ValueError(f"{len(items)} {what} make {len(self.batches)} batch(es) of {batch_size}, fewer than "
                             f"the {world} processes: lower the batch size")

    def __len__(self) -> int:
        return len(self.batches) // self.world

    def __iter__(self):
        idx = list(range(len(self.batches)))
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch())
            idx = torch.randperm(len(idx), generator=g).tolist()
        idx = idx[: len(self) * self.world][self.rank::self.world]
        for i in idx:
            yield self.collate(self.batches[i])


class BucketedData(L.LightningDataModule):
    """A DataModule serving length-bucketed batches: subclasses set `batch_size`, `eval_batch_size` and implement
    `buckets` (a LengthBuckets of a split for this process); `setup` runs before the first loader."""

    batch_size: int
    eval_batch_size: int

    def buckets(self, split: str, batch_size: int, shuffle: bool, world: int, rank: int,
                epoch: Callable[[], int]) -> LengthBuckets:
        raise NotImplementedError

    def _loader(self, split: str, batch_size: int, shuffle: bool) -> DataLoader:
        self.setup()
        trainer = getattr(self, "trainer", None)
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        epoch = (lambda: trainer.current_epoch) if trainer is not None else (lambda: 0)
        return DataLoader(self.buckets(split, batch_size, shuffle, world, rank, epoch), batch_size=None)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.batch_size, True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("validation", self.eval_batch_size, False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.eval_batch_size, False)


def batch_generator(seed: int, idx: list[int]) -> torch.Generator:
    """A generator seeded by a batch's indices: the random draws of a batch (query points, views) are the same
    whenever the same batch is drawn again, so a rerun or a resume sees the same data."""
    return torch.Generator().manual_seed(hash((seed, *idx)) & 0x7FFF_FFFF_FFFF_FFFF)


def draw_cached(cache: dict[str, torch.Tensor], rows: torch.Tensor, box: int, near: int,
                g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's training points for one step, drawn with replacement from its cached pools: `box` of the box
    samples, then `near` of the near-surface ones (`cache` holds box_points/near_points [R, P, D] and their labels
    box_inside/near_inside [R, P]). Returns points [len(rows), box + near, D] (float) and labels (float)."""
    points, labels = [], []
    for kind, n in (("box", box), ("near", near)):
        pick = torch.randint(cache[f"{kind}_points"].shape[1], (len(rows), n), generator=g)
        points.append(cache[f"{kind}_points"][rows[:, None], pick])
        labels.append(cache[f"{kind}_inside"][rows[:, None], pick])
    return torch.cat(points, 1).float(), torch.cat(labels, 1).float()


def split_off(n: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (rest, held_out) of a fixed-seed random split, so validation never overlaps training."""
    if not 0 <= size < n:
        raise ValueError(f"cannot hold out {size} of {n} examples")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[size:].sort().values, perm[:size].sort().values


def data_folders(data_dir: str | None, name: str, *system: str, subfolder: str | None = None) -> list[Path]:
    """Where a dataset's files are looked for, in order: `data_dir`, `$ZOO_HOME/data/<name>`, then system folders;
    each followed by its `subfolder` (the folder an official archive unpacks to) when given."""
    dirs = [Path(data_dir).expanduser()] if data_dir else []
    dirs += [zoo_home() / "data" / name, *map(Path, system)]
    return [d for base in dirs for d in ((base, base / subfolder) if subfolder else (base,))]


def locate(folders: list[Path], find: Callable[[Path], T | None], what: str, how: str) -> T:
    """The first non-None `find(folder)`, or a FileNotFoundError naming `what` was missing, every folder tried,
    and `how` to get the data."""
    for folder in folders:
        found = find(folder)
        if found is not None:
            return found
    tried = "\n  ".join(map(str, folders))
    raise FileNotFoundError(f"{what} were not found in:\n  {tried}\n{how}")


def folder_with(*files: str) -> Callable[[Path], Path | None]:
    """A `find` for `locate`: the folder itself when it holds every one of `files`."""
    return lambda folder: folder if all((folder / f).is_file() for f in files) else None


def build_once(folder: Path, write: Callable[[Path], Any]) -> None:
    """Make a derived dataset folder once: `write(tmp)` fills a temporary sibling folder, which then becomes `folder`
    with a `done` marker. A crash leaves no folder that looks complete; a half-built one from an earlier crash is
    replaced; when another process finishes the same folder meanwhile, its copy is kept."""
    import shutil
    import tempfile

    if (folder / "done").is_file():
        return
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.partial-"))
    try:
        write(tmp)
        (tmp / "done").write_text("")
        if (folder / "done").is_file():
            shutil.rmtree(tmp)
        else:
            if folder.exists():
                shutil.rmtree(folder)
            tmp.rename(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


class InMemoryData(L.LightningDataModule):
    """Base of DataModules whose splits are in-memory Datasets (`train_set`, `val_set`, `test_set`, filled by
    `setup`): batched loaders, with the training one shuffled by (seed, epoch)."""

    def __init__(self, batch_size: int = 100, seed: int = 0, num_workers: int = 0):
        super().__init__()
        self.batch_size, self.seed, self.num_workers = batch_size, seed, num_workers
        self.train_set = self.val_set = self.test_set = None

    def _loader(self, ds: Dataset, train: bool) -> DataLoader:
        return DataLoader(ds, batch_size=self.batch_size, sampler=EpochSampler(ds, self.seed) if train else None,
                          collate_fn=_batch_as_is, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, False)


class ImageClassificationData(InMemoryData):
    """Base: subclasses implement `load_arrays()` -> (train_x, train_y, test_x, test_y) as integer tensors."""

    num_classes: int = 10
    scale: float = 255.0
    classes: tuple[str, ...] = ()

    def __init__(self, batch_size: int = 100, val_size: int = 5000, seed: int = 0, num_workers: int = 0):
        super().__init__(batch_size=batch_size, seed=seed, num_workers=num_workers)
        self.val_size = val_size

    def load_arrays(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        tx, ty, sx, sy = self.load_arrays()
        rest, held = split_off(len(ty), self.val_size, self.seed)
        self.train_set = ImageArrays(tx[rest], ty[rest], self.scale)
        self.val_set = ImageArrays(tx[held], ty[held], self.scale)
        self.test_set = ImageArrays(sx, sy, self.scale)


class LocalImageData(ImageClassificationData):
    """Base of the datasets that are never downloaded (their official files publish no checksum to pin): they
    are read from `data_dir` or `$ZOO_HOME/data/<name>`, and `prepare_data` only checks, with `locate()`, that
    the files are there, failing with where it looked and how to get them."""

    def __init__(self, data_dir: str | None = None, batch_size: int = 100, val_size: int = 5000, seed: int = 0,
                 num_workers: int = 0):
        super().__init__(batch_size=batch_size, val_size=val_size, seed=seed, num_workers=num_workers)
        self.data_dir = data_dir

    def locate(self) -> Any:
        raise NotImplementedError

    def prepare_data(self) -> None:
        self.locate()
