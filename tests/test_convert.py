"""`zoo convert`: each Keras layer convention the converters rely on, proven against the real Keras layer on the same
input; an official Pix2seq training checkpoint (every variable the official code saves, optimizer state included)
converting totally; every kind of mismatch refused with the names it concerns; the command end to end (release,
provenance, `zoo.load` bit-exact); the download checked against the bucket's md5; and `zoo.load` of an unconverted
entry naming `zoo convert`."""
import base64
import hashlib
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from tf_fixture import needs_tf, write_tf_fixtures
from torch import nn

import zoo
from zoo import _convert
from zoo._convert import StateBuilder, checkpoint_prefix, convert_state, download_gcs
from zoo._errors import CheckpointNotAvailable, ConversionError
from zoo.models.pix2seq import Pix2SeqDetector
from zoo.models.pix2seq.model import Attention

pytestmark = pytest.mark.usefixtures("one_thread")
LISTING = Path(__file__).parent / "data" / "pix2seq_official_variables.txt"
LISTING_VIT = LISTING.with_name("pix2seq_official_variables_vit.txt")
LISTING_RESNETC = LISTING.with_name("pix2seq_official_variables_resnetc.txt")
# the size the listing was saved at (its first lines); the vocabulary and positions are the released configs'
SMALL = {"image_size": 64, "num_encoder_layers": 1, "num_decoder_layers": 1, "dim_att": 32, "dim_mlp": 64,
         "num_heads": 2, "dim_att_dec": 32, "dim_mlp_dec": 64, "num_heads_dec": 2}


@pytest.fixture(scope="module")
def tf_files(tmp_path_factory):
    return write_tf_fixtures(tmp_path_factory.mktemp("tf"), LISTING, LISTING_VIT, LISTING_RESNETC)


@pytest.fixture(scope="module")
def keras(tf_files):
    folder = tf_files / "keras"
    variables = dict(np.load(folder / "variables.npz"))
    # Keras 3 (installed here) tracks a kernel under its attribute `_kernel`; Keras 2, which wrote the official
    # checkpoints, under `kernel` (tests/data/pix2seq_official_variables.txt): the names are the listing's business,
    # the arithmetic this fixture's
    variables = {k.replace("/_kernel", "/kernel"): v for k, v in variables.items()}
    return variables, dict(np.load(folder / "io.npz"))


@pytest.fixture(scope="module")
def official(tf_files):
    """The listed checkpoint's prefix and its variables as TensorFlow read them (zoo convert's own reading is
    tested through the command)."""
    folder = tf_files / LISTING.stem
    return folder / "ckpt-1", dict(np.load(folder / "variables.npz"))


def _load(module: nn.Module, b: StateBuilder) -> nn.Module:
    module.load_state_dict(b.finish(module.state_dict(), "test"), strict=True)
    return module.eval()


@needs_tf
def test_keras_layer_conventions_give_the_keras_outputs(keras):
    variables, io_ = keras
    x, memory, image = (torch.from_numpy(io_[k]) for k in ("x", "memory", "image"))
    close = dict(rtol=1e-5, atol=1e-5)

    b = StateBuilder({k: v for k, v in variables.items() if k.startswith("dense/")})
    b.dense("dense", "fc")
    dense = _load(nn.ModuleDict({"fc": nn.Linear(8, 6)}), b)
    torch.testing.assert_close(dense["fc"](x), torch.from_numpy(io_["dense"]), **close)

    b = StateBuilder({k: v for k, v in variables.items() if k.startswith("ln/")})
    b.layer_norm("ln", "ln")
    ln = _load(nn.ModuleDict({"ln": nn.LayerNorm(8, eps=1e-6)}), b)
    torch.testing.assert_close(ln["ln"](x), torch.from_numpy(io_["ln"]), **close)

    b = StateBuilder({k: v for k, v in variables.items() if k.startswith("mha/")})
    b.mha("mha", "a.query", "a.key", "a.value", "a.out")
    attn = _load(nn.ModuleDict({"a": Attention(8, heads=2)}), b)
    torch.testing.assert_close(attn["a"](x, memory), torch.from_numpy(io_["mha"]), **close)

    b = StateBuilder({k: v for k, v in variables.items() if k.startswith(("conv/", "bn/"))})
    b.conv2d("conv", "0")
    b.batch_norm("bn", "1")
    conv_bn = _load(nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(4)), b)
    nchw = image.permute(0, 3, 1, 2)
    torch.testing.assert_close(conv_bn[0](nchw).permute(0, 2, 3, 1), torch.from_numpy(io_["conv"]), **close)
    torch.testing.assert_close(conv_bn(nchw).permute(0, 2, 3, 1), torch.from_numpy(io_["bn"]), **close)

    # the decoder's read-out: logits = x E^T + b with the input embedding E, add_weight names escaped ("/" -> ".S")
    e, bias = (torch.from_numpy(variables[f"decoder/ar_decoder.S{n}"]) for n in ("token_embedding", "outp_bias"))
    torch.testing.assert_close(x @ e.T + bias, torch.from_numpy(io_["logits"]), **close)


@needs_tf
def test_official_resnet_pools_give_the_keras_outputs(keras):
    """The pools where TensorFlow and PyTorch pad differently (SimCLR's official ResNet): the stem's 3x3/2 "SAME"
    max-pool (the odd padding pixel at the bottom/right) and the ResNet-D shortcut's 2x2 average ("SAME" at
    stride 1, which leaves the padding out of the mean; bottom/right zeros then "VALID" at stride 2), on even
    and odd sizes."""
    from zoo.nn.resnet import OfficialAvgDown, resnet_encoder

    _, io_ = keras
    stem_pool = resnet_encoder(18, 0.125, cifar_stem=False).maxpool
    for size in ("even", "odd"):
        x = torch.from_numpy(io_[f"pool_in_{size}"]).permute(0, 3, 1, 2)
        for name, pool in (("maxpool", stem_pool), ("avgdown1", OfficialAvgDown(1)),
                           ("avgdown2", OfficialAvgDown(2))):
            want = torch.from_numpy(io_[f"{name}_{size}"]).permute(0, 3, 1, 2)
            torch.testing.assert_close(pool(x), want, rtol=1e-6, atol=1e-6, msg=f"{name} {size}")
    x = torch.from_numpy(io_["pool_in_even"]).permute(0, 3, 1, 2)
    assert not torch.allclose(nn.MaxPool2d(3, 2, padding=1)(x), stem_pool(x))  # PyTorch's own padding differs


@needs_tf
def test_official_training_checkpoint_converts_totally(official):
    prefix, variables = official
    det = Pix2SeqDetector(**SMALL)
    b = StateBuilder(variables)
    _convert.converter("pix2seq")(b, det)
    state = b.finish(det.state_dict(), "test")
    assert set(state) == set(det.state_dict())
    # everything not mapped is training state: the optimizer's slots and counters, the step, the object graph
    skipped = b.skipped()
    assert len(b.used) + len(skipped) == len(variables) == 775  # the listing's variables but the object graph
    assert all(k.startswith(("optimizer/", "global_step", "save_counter", "_CHECKPOINTABLE")) for k in skipped)
    assert sum(k.startswith("optimizer/") for k in skipped) > 100
    # a value lands where it should, transposed to PyTorch's layout
    kernel = variables["model/encoder/resnet/block_groups/1/layers/0/conv_relu_dropblock_layers/3/conv2d/kernel"]
    assert torch.equal(state["model.backbone.layer2.0.conv2.weight"], torch.from_numpy(kernel).permute(3, 2, 0, 1))
    q = variables["model/decoder/decoder/dec_layers/0/cross_mha/_query_dense/kernel"]
    assert torch.equal(state["model.decoder.0.cross_attn.query.weight"], torch.from_numpy(q.reshape(32, 32).T))
    assert checkpoint_prefix(prefix.parent) == prefix and checkpoint_prefix(f"{prefix}.index") == prefix


@needs_tf
def test_official_resnet_c_checkpoint_converts_totally(tf_files, official):
    """resnet-c (the official R50-C4): the ResNet to its third block group, stride 16, as `feature_stage: 3`; a
    whole-ResNet checkpoint does not fit such a model (its fourth group is left over), nor the reverse."""
    variables = dict(np.load(tf_files / LISTING_RESNETC.stem / "variables.npz"))
    det = Pix2SeqDetector(**dict(SMALL, feature_stage=3))
    state = convert_state("pix2seq", variables, det, "resnet-c")
    assert not any(".layer4." in k for k in state)
    kernel = variables["model/encoder/resnet/block_groups/2/layers/5/conv_relu_dropblock_layers/6/conv2d/kernel"]
    assert torch.equal(state["model.backbone.layer3.5.conv3.weight"], torch.from_numpy(kernel).permute(3, 2, 0, 1))
    with pytest.raises(ConversionError, match="block_groups/3"):
        convert_state("pix2seq", official[1], det, "resnet into resnet-c")
    with pytest.raises(ConversionError, match="block_groups/3"):
        convert_state("pix2seq", variables, Pix2SeqDetector(**SMALL), "resnet-c into resnet")


@needs_tf
def test_official_vit_checkpoint_converts_totally(tf_files):
    variables = dict(np.load(tf_files / LISTING_VIT.stem / "variables.npz"))
    det = Pix2SeqDetector(**dict(SMALL, backbone="vit"))
    state = convert_state("pix2seq", variables, det, "vit")
    kernel = variables["model/encoder/stem_conv/kernel"]
    assert torch.equal(state["model.stem_conv.weight"], torch.from_numpy(kernel).permute(3, 2, 0, 1))
    assert torch.equal(state["model.stem_conv.bias"], torch.from_numpy(variables["model/encoder/stem_conv/bias"]))
    with pytest.raises(ConversionError, match=r"has a ViT encoder .* convert it into a Pix2SeqDetector with "
                                              r"backbone: vit"):
        convert_state("pix2seq", variables, Pix2SeqDetector(**SMALL), "vit into resnet")


@needs_tf
def test_mismatches_are_refused_with_their_names(official):
    _, variables = official
    det = Pix2SeqDetector(**SMALL)
    extra = dict(variables, **{"model/decoder/decoder/dec_layers/1/self_ln/gamma": np.ones(32, np.float32)})
    with pytest.raises(ConversionError, match=r"not mapped \(1\): model/decoder/decoder/dec_layers/1/self_ln/gamma"):
        convert_state("pix2seq", extra, det, "extra")
    fewer = {k: v for k, v in variables.items() if k != "model/proj_ln/beta"}
    with pytest.raises(ConversionError, match=r"file lacks \(1\): model/proj_ln/beta \(for model.proj_ln.bias\)"):
        convert_state("pix2seq", fewer, det, "fewer")
    wider = Pix2SeqDetector(**dict(SMALL, num_decoder_layers=2))
    with pytest.raises(ConversionError, match=r"lacks \(\d+\): model/decoder/decoder/dec_layers/1/"):
        convert_state("pix2seq", variables, wider, "deeper model")
    other = Pix2SeqDetector(**dict(SMALL, vocab_size=4000))
    with pytest.raises(ConversionError, match=r"shapes that differ \(2\).*model.output_bias: converted \(3000,\)"):
        convert_state("pix2seq", variables, other, "other vocabulary")
    with pytest.raises(ConversionError, match=r"has a ResNet encoder .* with a ResNet backbone"):
        convert_state("pix2seq", variables, Pix2SeqDetector(**dict(SMALL, backbone="vit")), "resnet into vit")
    other = {k.replace("model/encoder/resnet/", "model/encoder/convnext/"): v for k, v in variables.items()}
    with pytest.raises(ConversionError, match=r"neither the official ResNet nor its ViT \(encoder parts: convnext"):
        convert_state("pix2seq", other, det, "another encoder")


def _small_catalog(tmp_path: Path, monkeypatch) -> str:
    """A scratch catalogue holding pix2seq-coco's entry at the listing's size."""
    raw = yaml.safe_load((Path(zoo.__file__).parent / "_resources" / "checkpoints.yaml").read_text())
    entry = raw["checkpoints"]["pix2seq-coco"]
    entry["init_args"].update(SMALL)
    raw["checkpoints"] = {"pix2seq-coco": entry}
    raw["claims"] = {"2109.10852": [c for c in raw["claims"]["2109.10852"] if "check" not in c]}
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("ZOO_CATALOG", str(path))
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "home"))
    return "pix2seq-coco"


def test_unconverted_entry_names_zoo_convert(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_HOME", str(tmp_path))
    with pytest.raises(CheckpointNotAvailable, match=r"run `zoo convert pix2seq-coco`.*36.6 M parameters.*"
                                                     r"gs://pix2seq/coco_det_finetune/resnet_640x640"):
        zoo.load("pix2seq-coco")


@needs_tf
def test_zoo_convert_writes_a_release_that_loads_bit_exact(official, tmp_path, monkeypatch, capsys):
    from zoo.cli import main

    prefix, variables = official
    name = _small_catalog(tmp_path, monkeypatch)
    assert main(["convert", name, "--checkpoint", str(prefix.parent)]) == 0
    folder = tmp_path / "home" / "releases" / name
    assert str(folder) in capsys.readouterr().out
    prov = json.loads((folder / "provenance.json").read_text())
    assert prov["source"] == "gs://pix2seq/coco_det_finetune/resnet_640x640" and prov["converter"] == "pix2seq"
    index = prefix.with_name(prefix.name + ".index")
    assert prov["files_sha256"][index.name] == hashlib.sha256(index.read_bytes()).hexdigest()
    assert len(prov["files_sha256"]) == 2 and prov["variables"] == len(variables) + 1  # + the object graph
    assert "## Converted weights" in (folder / "README.md").read_text()
    loaded = zoo.load(name)
    fresh = Pix2SeqDetector(**loaded.hparams)
    fresh.load_state_dict(convert_state("pix2seq", variables, fresh, "again"))
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    assert torch.equal(loaded.model.token_embedding,
                       torch.from_numpy(variables["model/decoder/ar_decoder.Stoken_embedding"]))


@needs_tf
def test_multitask_checkpoint_converts_with_its_tokenizer(tf_files, tmp_path, monkeypatch, capsys):
    """pix2seq-v2-coco-vit-b: the multi-task checkpoint is the detector's network; the official SentencePiece file
    its source names is kept in the model (here a small one at the listing's vocabulary of 3000)."""
    from zoo.cli import main
    from zoo.models.pix2seq.captions import train_tokenizer

    raw = yaml.safe_load((Path(zoo.__file__).parent / "_resources" / "checkpoints.yaml").read_text())
    name = "pix2seq-v2-coco-vit-b"
    entry = raw["checkpoints"][name]
    entry["init_args"].update(SMALL, vocab_size=3000, text_vocab_shift=2000)
    raw["checkpoints"] = {name: entry}
    raw["claims"] = {"2206.07669": [c for c in raw["claims"]["2206.07669"] if "check" not in c]}
    (tmp_path / "catalog.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("ZOO_CATALOG", str(tmp_path / "catalog.yaml"))
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "home"))
    spm = tmp_path / "c4_en_32k_spm.model"
    spm.write_bytes(train_tokenizer(["a red bag on a dark background", "two shoes and a coat"] * 20, 64))
    assert main(["convert", name, "--checkpoint", str(tf_files / LISTING_VIT.stem), "--tokenizer", str(spm)]) == 0
    prov = json.loads((tmp_path / "home" / "releases" / name / "provenance.json").read_text())
    assert prov["files_sha256"][spm.name] == hashlib.sha256(spm.read_bytes()).hexdigest()
    loaded = zoo.load(name)
    assert bytes(loaded.caption_tokenizer.numpy()) == spm.read_bytes()
    assert loaded.tokenizer.decode(loaded.tokenizer.encode(["a red bag"])) == ["a red bag"]
    variables = dict(np.load(tf_files / LISTING_VIT.stem / "variables.npz"))
    assert torch.equal(loaded.model.token_embedding,
                       torch.from_numpy(variables["model/decoder/ar_decoder.Stoken_embedding"]))
    assert main(["convert", name, "--checkpoint", str(tf_files / LISTING_VIT.stem), "--tokenizer",
                 str(tmp_path / "none.model")]) == 2
    assert "--tokenizer" in capsys.readouterr().err


def test_zoo_convert_without_source_or_checkpoint_says_what_to_do(tmp_path, monkeypatch, capsys):
    from zoo.cli import main

    monkeypatch.setenv("ZOO_HOME", str(tmp_path))
    assert main(["convert", "forward-forward-digits"]) == 2
    assert "no official checkpoint to convert" in capsys.readouterr().err
    assert main(["convert", "pix2seq-coco", "--checkpoint", str(tmp_path / "nowhere")]) == 2
    assert "no TensorFlow checkpoint there" in capsys.readouterr().err
    (tmp_path / "a.index").touch()
    (tmp_path / "b.index").touch()
    with pytest.raises(ConversionError, match="found a.index, b.index"):
        checkpoint_prefix(tmp_path)


def test_download_checks_each_file_against_the_bucket_md5(tmp_path):
    files = {"coco/ckpt-1.index": b"index bytes", "coco/ckpt-1.data-00000-of-00001": b"x" * 3000,
             "coco/hub/saved_model.pb": b"a TF-Hub copy"}
    served = dict(files)

    def opener(url):
        if "/storage/v1/b/pix2seq/o?" in url:
            assert "prefix=coco%2F" in url
            items = [{"name": n, "size": str(len(b)), "md5Hash": base64.b64encode(hashlib.md5(b).digest()).decode()}
                     for n, b in files.items()]
            return io.BytesIO(json.dumps({"items": items}).encode())
        return io.BytesIO(served[url.removeprefix("https://storage.googleapis.com/pix2seq/").replace("%2F", "/")])

    only = download_gcs("gs://pix2seq/coco", tmp_path / "only", opener, include=("ckpt-*.index", "ckpt-*.data-*"))
    assert sorted(p.name for p in only.iterdir()) == ["ckpt-1.data-00000-of-00001", "ckpt-1.index"]
    with pytest.raises(CheckpointNotAvailable, match="lists no files matching model.ckpt-"):
        download_gcs("gs://pix2seq/coco", tmp_path / "none", opener, include=("model.ckpt-*",))
    dest = download_gcs("gs://pix2seq/coco", tmp_path / "src", opener)
    assert (dest / "ckpt-1.index").read_bytes() == b"index bytes" and (dest / "saved_model.pb").is_file()
    served["coco/ckpt-1.index"] = b"tampered!!!"
    (dest / "ckpt-1.index").unlink()
    with pytest.raises(CheckpointNotAvailable, match="md5 .* is not the"):
        download_gcs("gs://pix2seq/coco", dest, opener)
    assert not (dest / "ckpt-1.index").exists() and not (dest / "ckpt-1.index.part").exists()


def test_keras_attention_math_by_hand():
    """Without TensorFlow: Keras MultiHeadAttention written out with its einsums ([d, heads, head_dim] projections,
    1/sqrt(head_dim) on the queries, a [heads, head_dim, d] output) equals our attention after the mapping."""
    d, heads, hd, g = 6, 2, 3, np.random.default_rng(0)
    w = {f"m/{n}/kernel": g.standard_normal((d, heads, hd)).astype(np.float32)
         for n in ("_query_dense", "_key_dense", "_value_dense")}
    w |= {f"m/{n}/bias": g.standard_normal((heads, hd)).astype(np.float32)
          for n in ("_query_dense", "_key_dense", "_value_dense")}
    w |= {"m/_output_dense/kernel": g.standard_normal((heads, hd, d)).astype(np.float32),
          "m/_output_dense/bias": g.standard_normal(d).astype(np.float32)}
    t = {k: torch.from_numpy(v) for k, v in w.items()}
    x, mem = torch.randn(2, 4, d), torch.randn(2, 5, d)

    def proj(inp, n):
        return torch.einsum("btd,dhk->bthk", inp, t[f"m/{n}/kernel"]) + t[f"m/{n}/bias"]

    q, k, v = proj(x, "_query_dense") / hd ** 0.5, proj(mem, "_key_dense"), proj(mem, "_value_dense")
    att = torch.einsum("bthk,bshk->bhts", q, k).softmax(-1)
    want = torch.einsum("bhts,bshk->bthk", att, v)
    want = torch.einsum("bthk,hkd->btd", want, t["m/_output_dense/kernel"]) + t["m/_output_dense/bias"]
    b = StateBuilder(w)
    b.mha("m", "a.query", "a.key", "a.value", "a.out")
    attn = _load(nn.ModuleDict({"a": Attention(d, heads)}), b)
    torch.testing.assert_close(attn["a"](x, mem), want, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not (os.environ.get("ZOO_PIX2SEQ_CHECKOUT") and os.environ.get("ZOO_TF_KERAS_PYTHON")),
                    reason="needs a google-research/pix2seq checkout (ZOO_PIX2SEQ_CHECKOUT) and a Python with "
                           "tensorflow + tf-keras (ZOO_TF_KERAS_PYTHON); see tests/pix2seq_official_parity.py")
@pytest.mark.parametrize("variant", ["resnet", "resnet-c", "vit-b", "vit-l"])
def test_converted_model_equals_the_official_model(variant):
    from pix2seq_official_parity import parity

    r = parity(os.environ["ZOO_PIX2SEQ_CHECKOUT"], os.environ["ZOO_TF_KERAS_PYTHON"], size=64,
               encoder_layers=2, decoder_layers=2, variant=variant)
    assert r["encoded_max_abs_diff"] < 1e-4 * r["encoded_max_abs"] + 1e-5
    assert r["logits_max_abs_diff"] < 1e-4 * r["logits_max_abs"] + 1e-5
