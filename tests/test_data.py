"""DataModules read the real on-disk formats: IDX parsing, splits, resolution order, missing-data errors."""
import gzip

import numpy as np
import pytest
import torch
from conftest import write_idx

from zoo.data import DigitsDataModule, IDXDataModule, read_idx
from zoo.data._base import EpochSampler


def test_read_idx_gz_and_raw(tmp_path):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    assert np.array_equal(read_idx(write_idx(tmp_path / "a", a, gz=True)), a)
    assert np.array_equal(read_idx(write_idx(tmp_path / "b", a, gz=False)), a)
    labels = np.array([3, 1, 4], dtype=np.uint8)
    assert read_idx(write_idx(tmp_path / "c", labels)).tolist() == [3, 1, 4]


def test_read_idx_hand_written_bytes(tmp_path):
    # magic 0x00000801 (ubyte, 1 dim), size 2, then the data: the label file of two images
    p = tmp_path / "labels"
    p.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 2, 7, 9]))
    assert read_idx(p).tolist() == [7, 9]


def test_read_idx_refuses_truncated_and_foreign_files(tmp_path):
    p = tmp_path / "t.gz"
    p.write_bytes(gzip.compress(bytes([0, 0, 8, 1, 0, 0, 0, 5, 1, 2])))
    with pytest.raises(ValueError, match="truncated"):
        read_idx(p)
    q = tmp_path / "x"
    q.write_bytes(b"PK\x03\x04rest")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(q)


def test_idx_datamodule_official_test_split_and_fixed_validation(idx_dir):
    dm = IDXDataModule("fashion-mnist", data_dir=str(idx_dir), val_size=40, batch_size=16)
    dm.prepare_data()
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (200, 40, 40)
    x, y = next(iter(dm.test_dataloader()))
    assert x.shape == (16, 1, 28, 28) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert torch.equal(y, torch.from_numpy(read_idx(idx_dir / "t10k-labels-idx1-ubyte.gz")[:16].astype(np.int64)))
    again = IDXDataModule("fashion-mnist", data_dir=str(idx_dir), val_size=40)
    again.setup()
    assert torch.equal(again.val_set.images, dm.val_set.images)  # the same seed carves the same validation set
    train_rows = {r.numpy().tobytes() for r in dm.train_set.images}
    assert not any(r.numpy().tobytes() in train_rows for r in dm.val_set.images)


def test_missing_dataset_error_says_where_and_how(tmp_path, zoo_home):
    dm = IDXDataModule("mnist", data_dir=str(tmp_path / "nowhere"), download=False)
    with pytest.raises(FileNotFoundError) as err:
        dm.prepare_data()
    msg = str(err.value)
    for place in (tmp_path / "nowhere", zoo_home / "data" / "mnist", "/usr/share/datasets/mnist"):
        assert str(place) in msg
    assert "Downloading is off" in msg and "--data.init_args.data_dir" in msg and "lecun.com" in msg


def test_digits_datamodule_splits_real_digits():
    dm = DigitsDataModule(val_size=180, test_size=360)
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (1257, 180, 360)
    x, y = dm.train_set.__getitems__([0, 1, 2])
    assert x.shape == (3, 1, 8, 8) and x.max() <= 1 and y.dtype == torch.int64


def test_epoch_sampler_is_a_function_of_seed_and_epoch():
    s = EpochSampler(range(50), seed=7)
    first = list(s)
    assert list(s) == first and sorted(first) == list(range(50))
    s.set_epoch(1)
    second = list(s)
    assert second != first
    t = EpochSampler(range(50), seed=7)
    t.set_epoch(1)
    assert list(t) == second


def test_random_translate_moves_each_image_by_its_own_offset():
    from zoo.data.augment import random_translate

    x = torch.arange(2 * 16, dtype=torch.float32).view(2, 1, 4, 4)
    g = torch.Generator().manual_seed(3)
    shifts = torch.randint(-1, 2, (2, 2), generator=torch.Generator().manual_seed(3))  # rows: dy, dx per image
    out = random_translate(x, 1, g)
    for b in range(2):
        dy, dx = int(shifts[0, b]), int(shifts[1, b])
        want = torch.zeros(4, 4)
        for i in range(4):
            for j in range(4):
                if 0 <= i - dy < 4 and 0 <= j - dx < 4:
                    want[i, j] = x[b, 0, i - dy, j - dx]
        assert torch.equal(out[b, 0], want)
    assert torch.equal(random_translate(x, 0), x)


def test_random_hflip_mirrors_each_image_with_its_own_coin():
    from zoo.data.augment import random_hflip

    x = torch.arange(64 * 6, dtype=torch.float32).view(64, 1, 2, 3)
    coins = torch.rand(64, generator=torch.Generator().manual_seed(5)) < 0.5
    out = random_hflip(x, generator=torch.Generator().manual_seed(5))
    assert torch.equal(out[coins], x[coins].flip(-1)) and torch.equal(out[~coins], x[~coins])
    assert 10 < int(coins.sum()) < 54 and torch.equal(random_hflip(x, 0.0), x)


def _write_celeba(root, colours, splits):
    """A CelebA folder in the official layout: 178 x 218 JPEGs whose central 140 x 140 square is one colour and
    whose border is another, and list_eval_partition.txt."""
    from PIL import Image

    (root / "img_align_celeba").mkdir(parents=True)
    lines = []
    for i, (colour, split) in enumerate(zip(colours, splits), 1):
        im = np.full((218, 178, 3), 255 - np.array(colour), np.uint8)
        im[39:179, 19:159] = colour  # the central crop: rows (218-140)/2 = 39.., columns (178-140)/2 = 19..
        Image.fromarray(im).save(root / "img_align_celeba" / f"{i:06d}.jpg", quality=100, subsampling=0)
        lines.append(f"{i:06d}.jpg {split}")
    (root / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")


def test_celeba_reads_the_official_layout_crops_and_caches(tmp_path, zoo_home):
    from zoo.data import CelebADataModule

    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (120, 120, 120), (10, 240, 90)]
    _write_celeba(tmp_path / "celeba", colours, [0, 0, 1, 2, 0])
    dm = CelebADataModule(data_dir=str(tmp_path), batch_size=2)  # torchvision's layout: DIR/celeba/...
    dm.setup()
    assert [len(s) for s in (dm.train_set, dm.val_set, dm.test_set)] == [3, 1, 1]
    x, y = dm.train_set.__getitems__([0, 1, 2])
    assert x.shape == (3, 3, 32, 32) and x.dtype == torch.float32 and y.tolist() == [0, 0, 0]
    # the crop keeps only the central square: every pixel has its colour (JPEG rounding aside), no border
    expected = torch.tensor([colours[i] for i in (0, 1, 4)], dtype=torch.float32)[:, :, None, None] / 255
    assert (x - expected).abs().max() < 6 / 255
    assert (dm.val_set.images.float() / 255 - torch.tensor(colours[2])[:, None, None] / 255).abs().max() < 6 / 255
    cache = tmp_path / "celeba" / "celeba32_crop140.safetensors"
    assert cache.is_file()
    (tmp_path / "celeba" / "img_align_celeba" / "000001.jpg").unlink()  # the cache alone now serves the images
    again = CelebADataModule(data_dir=str(tmp_path))
    again.setup()
    assert torch.equal(again.train_set.images, dm.train_set.images)
    with pytest.raises(FileNotFoundError, match="1 images listed"):  # without the cache, the gap is named
        CelebADataModule(data_dir=str(tmp_path), cache=False).setup()


def test_celeba_errors_say_what_is_wrong(tmp_path, zoo_home):
    from zoo.data import CelebADataModule, read_partition

    with pytest.raises(FileNotFoundError) as err:
        CelebADataModule(data_dir=str(tmp_path / "nowhere")).prepare_data()
    assert str(tmp_path / "nowhere") in str(err.value) and "img_align_celeba" in str(err.value)
    bad = tmp_path / "list_eval_partition.txt"
    bad.write_text("000001.jpg 0\n000002.jpg train\n")
    with pytest.raises(ValueError, match=":2: expected"):
        read_partition(bad)
