"""PatchCamelyon from its real file layout: six tiny HDF5 files written as the official release holds them (`x`:
uint8 [N, 96, 96, 3], `y`: uint8 [N, 1, 1, 1]); patches read per batch equal the files' contents; the two-view
DataModule keeps a class-balanced label fraction; wrong keys, shapes, labels or missing files are clear errors."""
import pickle

import numpy as np
import pytest
import torch

h5py = pytest.importorskip("h5py")

from medical_fixture import write_pcam_split  # noqa: E402

from zoo.data import PCamDataModule, TwoViewPCamDataModule  # noqa: E402
from zoo.data.pcam import PCamPatches  # noqa: E402

SIZES = {"train": 12, "valid": 4, "test": 6}


@pytest.fixture()
def pcam(tmp_path):
    arrays = {s: write_pcam_split(tmp_path, s, n, i) for i, (s, n) in enumerate(SIZES.items())}
    return tmp_path, arrays


def test_splits_read_the_files_patch_by_patch_and_by_batch(pcam):
    folder, arrays = pcam
    dm = PCamDataModule(data_dir=str(folder), batch_size=5)
    dm.prepare_data()
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (12, 4, 6)
    x, y = arrays["train"]
    patch, label = dm.train_set[3]
    assert patch.shape == (3, 96, 96) and torch.equal(patch, torch.from_numpy(x[3]).permute(2, 0, 1) / 255.0)
    assert int(label) == 1
    idx = [7, 2, 9, 2]  # unsorted, repeated: HDF5 reads need increasing indices, the order must come back
    batch, labels = dm.train_set.__getitems__(idx)
    assert torch.equal(batch, torch.stack([dm.train_set[i][0] for i in idx]))
    assert labels.tolist() == [1, 0, 1, 0]
    images, targets = next(iter(dm.test_dataloader()))
    assert images.shape == (5, 3, 96, 96) and targets.dtype == torch.long
    pickle.loads(pickle.dumps(dm.train_set))  # a used split still crosses into DataLoader workers


def test_two_views_and_a_class_balanced_label_fraction(pcam):
    folder, _ = pcam
    dm = TwoViewPCamDataModule(data_dir=str(folder), batch_size=4, label_fraction=0.5, size=64)
    dm.setup()
    assert len(dm.train_set) == 6 and dm.train_set.labels.tolist().count(1) == 3
    (a, b), y = next(iter(dm.train_dataloader()))
    assert a.shape == b.shape == (4, 3, 64, 64) and not torch.equal(a, b) and y.shape == (4,)
    assert len(dm.val_set) == 4  # evaluation splits stay whole
    # and are seen at the views' size, as the official evaluation resizes to the training size
    x, _ = dm.val_set.__getitems__([0, 1])
    assert x.shape == (2, 3, 64, 64) and dm.test_set.__getitems__([0])[0].shape == (1, 3, 64, 64)
    plain = PCamDataModule(data_dir=str(folder))
    plain.setup()
    native, _ = plain.val_set.__getitems__([0, 1])
    expected = torch.nn.functional.interpolate(native, size=(64, 64), mode="bilinear", antialias=True)
    assert torch.allclose(x, expected) and dm.val_set[1][0].shape == (3, 64, 64)


def test_bad_files_are_clear_errors(pcam, tmp_path_factory):
    folder, _ = pcam
    x_path, y_path = (folder / f"camelyonpatch_level_2_split_valid_{p}.h5" for p in ("x", "y"))
    with pytest.raises(KeyError, match=r"no dataset 'y' \(it holds \['x'\]\).*gunzipped"):
        PCamPatches(x_path, x_path)
    with h5py.File(y_path, "w") as f:
        f.create_dataset("y", data=np.zeros((3, 1, 1, 1), np.uint8))
    with pytest.raises(ValueError, match="holds 3 labels for the 4 patches"):
        PCamPatches(x_path, y_path)
    with h5py.File(y_path, "w") as f:
        f.create_dataset("y", data=np.full((4, 1, 1, 1), 7, np.uint8))
    with pytest.raises(ValueError, match="labels must be 0 .* found \\[7\\]"):
        PCamPatches(x_path, y_path)
    with h5py.File(x_path, "w") as f:
        f.create_dataset("x", data=np.zeros((4, 32, 32, 3), np.uint8))
    with pytest.raises(ValueError, match=r"uint8 \(4, 32, 32, 3\).*\[N, 96, 96, 3\]"):
        PCamPatches(x_path, y_path)
    empty = tmp_path_factory.mktemp("empty")
    with pytest.raises(FileNotFoundError, match="(?s)camelyonpatch_level_2_split_train_x.h5.*basveeling/pcam"):
        PCamDataModule(data_dir=str(empty)).prepare_data()
