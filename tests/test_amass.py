"""NASA's AMASS records read without TensorFlow: TFRecord framing and Example parsing against files TensorFlow writes,
the leave-one-motion-out split, the batches NASA trains on, and refusals of damaged or ill-sized files."""
from pathlib import Path

import numpy as np
import pytest
import torch

from zoo.data.amass import AMASSNASADataModule
from zoo.data.tfrecord import index_records, parse_example, read_record
from zoo.models.nasa import NASAModule

tf = pytest.importorskip("tensorflow", reason="TensorFlow (the test extra) writes the fixture records")


def _feature(v):
    if isinstance(v, bytes):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))
    return tf.train.Feature(float_list=tf.train.FloatList(value=np.asarray(v, np.float32).ravel()))


def write_frames(path: Path, frames: int, N: int = 40, V: int = 12, K: int = 3, seed: int = 0) -> list[dict]:
    """TFRecord frames with NASA's fields (official sizes N = 200,000, V = 6,890, K = 24; small here)."""
    rng = np.random.default_rng(seed)
    written = []
    with tf.io.TFRecordWriter(str(path)) as w:
        for f in range(frames):
            T = np.tile(np.eye(4, dtype=np.float32), (K, 1, 1))
            T[:, :3, 3] = rng.normal(size=(K, 3))
            d = {"point": rng.uniform(-1, 1, (N, 3)), "label": (rng.uniform(size=N) > 0.5).astype(np.float32),
                 "vert": rng.normal(size=(V, 3)), "weight": rng.dirichlet(np.ones(K), V), "transform": T,
                 "joint": rng.normal(size=(K, 3)), "name": f"{path.name}-{f}".encode()}
            ex = tf.train.Example(features=tf.train.Features(feature={k: _feature(v) for k, v in d.items()}))
            w.write(ex.SerializeToString())
            written.append(d)
    return written


def test_records_and_examples_read_as_tensorflow_wrote_them(tmp_path):
    frames = write_frames(tmp_path / "train-00-01-a.tfrecord", 3)
    idx = index_records(tmp_path / "train-00-01-a.tfrecord")
    assert len(idx) == 3
    for (offset, length), d in zip(idx, frames):
        ex = parse_example(read_record(tmp_path / "train-00-01-a.tfrecord", offset, length, verify=True))
        assert ex["name"] == [d["name"]]
        for k in ("point", "label", "vert", "weight", "transform", "joint"):
            assert np.array_equal(ex[k], np.asarray(d[k], np.float32).ravel()), k


def test_damaged_files_are_refused(tmp_path):
    path = tmp_path / "train-00-01-a.tfrecord"
    write_frames(path, 2)
    raw = bytearray(path.read_bytes())
    (tmp_path / "cut.tfrecord").write_bytes(raw[:-10])
    with pytest.raises(ValueError, match="runs past the end"):
        index_records(tmp_path / "cut.tfrecord")
    bad = raw.copy()
    bad[3] ^= 0xFF
    (tmp_path / "len.tfrecord").write_bytes(bad)
    with pytest.raises(ValueError, match="bad length checksum"):
        index_records(tmp_path / "len.tfrecord")
    offset, length = index_records(path)[0]
    flipped = raw.copy()
    flipped[offset + 20] ^= 0x01
    (tmp_path / "data.tfrecord").write_bytes(flipped)
    with pytest.raises(ValueError, match="fails its data checksum"):
        read_record(tmp_path / "data.tfrecord", offset, length, verify=True)


def test_leave_one_motion_out_batches_train_nasa(tmp_path):
    for m in range(3):
        write_frames(tmp_path / f"train-00-{m:02d}-of-1.tfrecord", 2, seed=m)
    write_frames(tmp_path / "train-01-00-of-1.tfrecord", 2, seed=9)  # another subject: ignored
    dm = AMASSNASADataModule(data_dir=str(tmp_path), subject=0, motion=1, box_points=5, surface_points=3,
                             eval_points=8, batch_size=2)
    dm.setup()
    assert len(dm.train_set) == 4 and len(dm.test_set) == 2
    b = next(iter(dm.train_dataloader()))
    assert b["points"].shape == (2, 8, 3) and b["transforms"].shape == (2, 3, 4, 4) and b["vertices"].shape == (2, 12, 3)
    assert torch.equal(b["root"], b["joints"][:, 0]) and b["vertex_parts"].max() < 3
    m = NASAModule(parts=3, total_width=12, n_box=5, sample_vertices=4)
    loss = m.losses(b).total
    loss.backward()
    assert torch.isfinite(loss)
    t = dm.test_set.__getitems__([0])
    assert t["points"].shape == (1, 8, 3)  # the first box samples only (the frame has 20 of each)
    with pytest.raises(FileNotFoundError, match="no NASA AMASS records"):
        AMASSNASADataModule(data_dir=str(tmp_path), subject=7).setup()
    with pytest.raises(ValueError, match="held-out motion 05"):
        AMASSNASADataModule(data_dir=str(tmp_path), subject=0, motion=5).setup()


def test_ill_sized_frames_name_the_file(tmp_path):
    path = tmp_path / "train-00-00-a.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as w:
        ex = tf.train.Example(features=tf.train.Features(feature={
            "point": _feature(np.zeros(9)), "label": _feature(np.zeros(4)), "vert": _feature(np.zeros(6)),
            "weight": _feature(np.zeros(4)), "transform": _feature(np.zeros(32)), "joint": _feature(np.zeros(6))}))
        w.write(ex.SerializeToString())
    dm = AMASSNASADataModule(data_dir=str(tmp_path), motion=0)
    dm.setup()
    with pytest.raises(ValueError, match="train-00-00-a.tfrecord.*do not agree"):
        dm.test_set.__getitems__([0])
