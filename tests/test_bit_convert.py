"""BiT's released .npz weights -> a REMEDIS network (`zoo convert`, converter "bit"): an archive written with the
official variable names (google-research/big_transfer) at a small size converts totally, and the converted network
gives the logits of timm's ResNetV2 loaded from the same archive by timm's own BiT loader (an implementation of the
official names written independently of ours) on the same images, and, with ZOO_BIT_CHECKOUT set to a checkout of
google-research/big_transfer, the logits of the authors' own PyTorch model (bit_pytorch/models.py, imported at run
time) loaded by its own `load_from`; leftovers, gaps and pickled archives are refused."""
import importlib.util
import os
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

import zoo
from zoo._convert import convert_state, npz_file, read_npz
from zoo._errors import ConversionError
from zoo.models.remedis import REMEDIS

SMALL = dict(stage="supervised", num_classes=7, in_chans=3, depth=26, width=0.25, groups=8)


def official_npz(path, seed=0, classes=7, stem=16, mids=(16, 32, 64, 128), units=(2, 2, 2, 2)):
    """An archive in the layout of BiT-{S,M}-R*.npz, written from the official naming scheme (not from a model):
    HWIO kernels, group norms before each convolution, a projection in each stage's first unit, a 1x1 conv head."""
    rng = np.random.default_rng(seed)
    v: dict[str, np.ndarray] = {}

    def conv(name, kh, cin, cout):
        v[f"resnet/{name}/standardized_conv2d/kernel"] = rng.normal(0, 1, (kh, kh, cin, cout)).astype(np.float32)

    def gn(name, c):
        v[f"resnet/{name}/group_norm/gamma"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
        v[f"resnet/{name}/group_norm/beta"] = rng.normal(0, 0.1, c).astype(np.float32)

    conv("root_block", 7, 3, stem)
    cin = stem
    for s, (mid, n) in enumerate(zip(mids, units), start=1):
        out = 4 * mid
        for u in range(1, n + 1):
            unit = f"block{s}/unit{u:02d}"
            gn(f"{unit}/a", cin)
            conv(f"{unit}/a", 1, cin, mid)
            if u == 1:
                conv(f"{unit}/a/proj", 1, cin, out)
            gn(f"{unit}/b", mid)
            conv(f"{unit}/b", 3, mid, mid)
            gn(f"{unit}/c", mid)
            conv(f"{unit}/c", 1, mid, out)
            cin = out
    v["resnet/group_norm/gamma"] = rng.uniform(0.5, 1.5, cin).astype(np.float32)
    v["resnet/group_norm/beta"] = rng.normal(0, 0.1, cin).astype(np.float32)
    v["resnet/head/conv2d/kernel"] = rng.normal(0, 0.05, (1, 1, cin, classes)).astype(np.float32)
    v["resnet/head/conv2d/bias"] = rng.normal(0, 0.1, classes).astype(np.float32)
    np.savez(path, **v)
    return v


def test_bit_archive_converts_to_timms_bit_outputs(tmp_path):
    from timm.layers import GroupNormAct, StdConv2d
    from timm.models.resnetv2 import ResNetV2, _load_weights

    path = tmp_path / "BiT-M-R26x0.25.npz"
    official_npz(path)
    reference = ResNetV2([2, 2, 2, 2], channels=(64, 128, 256, 512), num_classes=7, stem_chs=16, stem_type="fixed",
                         conv_layer=partial(StdConv2d, eps=1e-8), norm_layer=partial(GroupNormAct, num_groups=8))
    _load_weights(reference, str(path))
    ours = REMEDIS(**SMALL)
    ours.load_state_dict(convert_state("bit", read_npz(path), ours, "BiT test"), strict=True)
    x = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        want = reference.eval()(2 * x - 1)  # BiT reads [-1, 1]; the zoo's modules take [0, 1]
        got = ours.eval()(x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert want.abs().max() > 0.1  # random weights give logits far from zero


def test_bit_leftovers_gaps_and_pickles_are_refused(tmp_path):
    path = tmp_path / "a.npz"
    variables = official_npz(path)
    ours = REMEDIS(**SMALL)
    extra = dict(variables, **{"resnet/block5/unit01/a/group_norm/gamma": np.ones(4, np.float32)})
    with pytest.raises(ConversionError, match=r"not mapped \(1\): resnet/block5/unit01"):
        convert_state("bit", extra, ours, "BiT test")
    lacking = {k: a for k, a in variables.items() if k != "resnet/head/conv2d/bias"}
    with pytest.raises(ConversionError, match=r"the file lacks \(1\): resnet/head/conv2d/bias"):
        convert_state("bit", lacking, ours, "BiT test")
    with pytest.raises(ConversionError, match=r"shapes that differ .*net.classifier.weight"):
        convert_state("bit", variables, REMEDIS(**dict(SMALL, num_classes=5)), "BiT test")
    np.savez(tmp_path / "pickled.npz", w=np.array([{"not": "an array"}], dtype=object))
    with pytest.raises(ConversionError, match="never unpickles"):
        read_npz(tmp_path / "pickled.npz")
    (tmp_path / "truncated.bin").write_bytes(b"PK\x03\x04 cut short")
    with pytest.raises(ConversionError, match="not an .npz archive"):
        read_npz(tmp_path / "truncated.bin")
    assert npz_file(tmp_path, ("a.npz",)) == path
    with pytest.raises(ConversionError, match="found a.npz, pickled.npz"):
        npz_file(tmp_path)


def test_zoo_convert_makes_a_bit_release_that_loads_and_names_its_source(tmp_path, zoo_home, monkeypatch):
    """`zoo convert NAME --checkpoint FILE` with a numpy source: the release holds the converted weights and the
    file's sha256; the entries name `zoo convert` and the bucket when the weights are not there."""
    import dataclasses
    import json

    from zoo import _catalog
    from zoo._convert import convert
    from zoo._errors import CheckpointNotAvailable
    from zoo._hub import sha256_file

    name = "bit-m-r50x1"
    entry = _catalog.get(name)
    assert entry.source["framework"] == "numpy" and entry.source["url"] == "gs://bit_models"
    with pytest.raises(CheckpointNotAvailable, match=rf"zoo convert {name}"):
        zoo.load(name)
    small = dict(entry.init_args, **{k: SMALL[k] for k in ("num_classes", "depth", "width", "groups")})
    get = _catalog.get
    monkeypatch.setattr(_catalog, "get", lambda n: dataclasses.replace(entry, init_args=small) if n == name else get(n))
    path = tmp_path / "BiT-M-R50x1.npz"
    official_npz(path)
    folder = convert(name, path, tmp_path / "release")
    back = zoo.load(folder)
    want = REMEDIS(**SMALL)
    want.load_state_dict(convert_state("bit", read_npz(path), want, "BiT test"))
    for k, v in want.state_dict().items():
        assert torch.equal(v, back.state_dict()[k]), k
    provenance = json.loads((folder / "provenance.json").read_text())
    assert provenance["files_sha256"] == {path.name: sha256_file(path)}
    assert provenance["framework"].startswith("numpy")


@pytest.mark.skipif(not os.environ.get("ZOO_BIT_CHECKOUT"),
                    reason="set ZOO_BIT_CHECKOUT to a checkout of google-research/big_transfer")
def test_bit_archive_converts_to_the_official_pytorch_models_outputs(tmp_path):
    """BiT-R26x1 (two units a stage at the released width: 32 groups, a 64-channel stem) written in the official
    layout: the authors' ResNetV2 (its weight standardisation adds 1e-10 to the variance, ours 1e-8) and ours agree."""
    path = Path(os.environ["ZOO_BIT_CHECKOUT"]) / "bit_pytorch" / "models.py"
    spec = importlib.util.spec_from_file_location("bit_pytorch_models", path)
    official_models = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(official_models)
    archive = tmp_path / "BiT-M-R26x1.npz"
    official_npz(archive, classes=7, stem=64, mids=(64, 128, 256, 512))
    official = official_models.ResNetV2([2, 2, 2, 2], 1, head_size=7)
    with np.load(archive, allow_pickle=False) as z:
        official.load_from({k: z[k] for k in z.files})
    ours = REMEDIS(stage="supervised", num_classes=7, in_chans=3, depth=26, width=1.0, groups=32)
    ours.load_state_dict(convert_state("bit", read_npz(archive), ours, "BiT test"), strict=True)
    x = torch.rand(2, 3, 96, 96)
    with torch.no_grad():
        want = official.eval()(2 * x - 1)
        got = ours.eval()(x)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert want.abs().max() > 0.1


def test_a_file_at_a_buckets_top_level_is_listed_without_a_prefix_and_md5_checked(tmp_path):
    """BiT's files sit at the top of gs://bit_models: the listing asks for the whole bucket (no prefix) and only the
    included file is fetched, checked against the md5 the bucket lists."""
    import base64
    import hashlib
    import io
    import json

    from zoo._convert import download_gcs

    files = {"BiT-M-R50x1.npz": b"weights", "BiT-M-R50x1.h5": b"the TF2 copy", "vtab/other.npz": b"x"}
    asked = []

    def opener(url):
        asked.append(url)
        if "/storage/v1/b/bit_models/o" in url:
            items = [{"name": n, "size": str(len(b)), "md5Hash": base64.b64encode(hashlib.md5(b).digest()).decode()}
                     for n, b in files.items()]
            return io.BytesIO(json.dumps({"items": items}).encode())
        return io.BytesIO(files[url.removeprefix("https://storage.googleapis.com/bit_models/")])

    dest = download_gcs("gs://bit_models", tmp_path / "src", opener, include=("BiT-M-R50x1.npz",))
    assert "prefix=" not in asked[0] and sorted(q.name for q in dest.iterdir()) == ["BiT-M-R50x1.npz"]
    assert (dest / "BiT-M-R50x1.npz").read_bytes() == b"weights"
