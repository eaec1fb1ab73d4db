"""`zoo convert` for the official SimCLR checkpoints: every variable of a checkpoint written by the official TF1 code
(tests/data/simclr_official_variables_*.txt, listed from runs of google-research/simclr's resnet.py and heads with
one Momentum step: tests/simclr_official_parity.py) maps onto the zoo network or is skipped by name, each layer
lands where the official creation order puts it, and the wrong architecture is refused with what to set. The
pools that differ from PyTorch's are proven against Keras in test_convert.py; the whole model against the official
code by the parity script (run here when ZOO_SIMCLR_CHECKOUT and ZOO_TF_KERAS_PYTHON are set)."""
import functools
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from zoo._convert import StateBuilder, converter
from zoo._errors import ConversionError
from zoo.models.simclr import SimCLR
from zoo.models.simclrv2 import SimCLRv2FineTune

pytestmark = pytest.mark.usefixtures("one_thread")
DATA = Path(__file__).parent / "data"
R50 = dict(in_chans=3, num_classes=10, depth=50, width=1.0, cifar_stem=False, head_layers=3)


@functools.lru_cache(maxsize=None)
def _listed(name: str, ema: bool = False) -> dict[str, np.ndarray]:
    """The listing's variables with random values (optimizer slots as zeros), and, with `ema`, the ema_model/
    copy of the network that released checkpoints carry. Shared between tests, read only."""
    rng, out = np.random.default_rng(0), {}
    for line in (DATA / f"simclr_official_variables_{name}.txt").read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        var, *shape = line.split()
        shape = () if shape == ["-"] else tuple(int(s) for s in shape)
        if var == "global_step":
            out[var] = np.int64(1)
        elif var.endswith("/Momentum"):
            out[var] = np.broadcast_to(np.float32(0), shape)
        else:
            out[var] = rng.standard_normal(shape, dtype=np.float32)
            if ema and var.startswith(("base_model/", "head_contrastive/")):
                out[f"ema_model/{var}"] = out[var] * 0.5
    return out


def _convert(variables, module) -> tuple[dict[str, torch.Tensor], StateBuilder]:
    b = StateBuilder(variables)
    converter("simclr")(b, module)
    state = b.finish(module.state_dict(), "test")
    module.load_state_dict(state, strict=True)
    return state, b


def _conv(v: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(v).permute(3, 2, 0, 1)


def test_pretrained_checkpoint_converts_totally_in_the_official_order():
    variables = _listed("r50_1x_sk0", ema=True)
    net = SimCLR(**R50)
    state, b = _convert(variables, net)
    assert len(b.used) + len(b.skipped()) == len(variables)
    assert all(k.endswith("/Momentum") or k.startswith("ema_model/") or k == "global_step" for k in b.skipped())
    # the plain weights are the ones taken, the moving-average copy skipped
    assert {k for k in b.skipped() if k.startswith("ema_model/")} == {
        f"ema_model/{k}" for k in b.used if k.startswith(("base_model/", "head_contrastive/"))}
    # the stem, then each block's projection shortcut before its own convolutions (official creation order)
    for tf_name, ours in (("conv2d", "net.f.conv1"), ("conv2d_1", "net.f.layer1.0.downsample.0"),
                          ("conv2d_2", "net.f.layer1.0.conv1"), ("conv2d_5", "net.f.layer1.1.conv1"),
                          ("conv2d_52", "net.f.layer4.2.conv3")):
        assert torch.equal(state[f"{ours}.weight"], _conv(variables[f"base_model/{tf_name}/kernel"])), tf_name
    bn = "base_model/batch_normalization_52"
    assert torch.equal(state["net.f.layer4.2.bn3.running_var"], torch.from_numpy(variables[f"{bn}/moving_variance"]))
    # the head: dense without bias + batch norm; the last norm scales without a shift
    assert torch.equal(state["net.g.net.3.weight"],
                       torch.from_numpy(variables["head_contrastive/nl_1/dense/kernel"]).T)
    assert torch.equal(state["net.g.net.7.weight_scale"],
                       torch.from_numpy(variables["head_contrastive/nl_2/batch_normalization/gamma"]))
    assert torch.equal(state["probe.bias"], torch.from_numpy(variables["head_supervised/linear_layer/dense/bias"]))


def test_selective_kernel_checkpoint_converts_totally():
    variables = _listed("r50_1x_sk1")
    state, b = _convert(variables, SimCLR(**R50, sk_ratio=0.0625))
    assert len(b.used) + len(b.skipped()) == len(variables)
    # ResNet-D stem (3 convs, 3 norms), then the first block: pooled shortcut, conv1, the selective kernel's
    # conv/bn, squeeze conv/bn and mixing conv, conv3
    for tf_name, ours in (("conv2d", "conv1.0"), ("conv2d_2", "conv1.6"), ("conv2d_3", "layer1.0.downsample.1"),
                          ("conv2d_4", "layer1.0.conv1"), ("conv2d_5", "layer1.0.conv2.conv"),
                          ("conv2d_6", "layer1.0.conv2.fc1"), ("conv2d_7", "layer1.0.conv2.fc2"),
                          ("conv2d_8", "layer1.0.conv3")):
        assert torch.equal(state[f"net.f.{ours}.weight"], _conv(variables[f"base_model/{tf_name}/kernel"])), tf_name
    for tf_name, ours in (("batch_normalization_2", "bn1"), ("batch_normalization_3", "layer1.0.downsample.2"),
                          ("batch_normalization_6", "layer1.0.conv2.bn_fc1"), ("batch_normalization_7",
                                                                                "layer1.0.bn3")):
        assert torch.equal(state[f"net.f.{ours}.weight"],
                           torch.from_numpy(variables[f"base_model/{tf_name}/gamma"])), tf_name


def test_fine_tuned_network_keeps_the_head_layers_it_uses():
    """A fine-tuned checkpoint holds the whole head; the classifier reads the first layer (ft_proj_selector 1),
    so the layers above it are skipped by name, as the official network ignores them."""
    variables = _listed("r50_1x_sk0")
    net = SimCLRv2FineTune(**R50, ft_proj_selector=1)
    state, b = _convert(variables, net)
    assert {k.split("/")[1] for k in b.skipped() if k.startswith("head_contrastive/")} == {"nl_1", "nl_2"}
    assert torch.equal(state["net.classifier.weight"],
                       torch.from_numpy(variables["head_supervised/linear_layer/dense/kernel"]).T)


def test_v1_checkpoints_have_no_head_and_the_wrong_architecture_is_refused():
    v1 = _listed("r50_1x_v1")
    assert not any(k.startswith("head_contrastive/") for k in v1)
    _convert(v1, SimCLR(**R50, head="none"))
    with pytest.raises(ConversionError, match="no projection head .*head: none"):
        _convert(v1, SimCLR(**R50))
    with pytest.raises(ConversionError, match=r"layers this one lacks .* sk_ratio"):
        _convert(_listed("r50_1x_sk1"), SimCLR(**R50))
    with pytest.raises(ConversionError, match="the file lacks"):
        _convert(_listed("r50_1x_sk0"), SimCLR(**R50, sk_ratio=0.0625))


def test_simclr_entries_name_zoo_convert(tmp_path, monkeypatch):
    import zoo
    from zoo._errors import CheckpointNotAvailable

    monkeypatch.setenv("ZOO_HOME", str(tmp_path))
    with pytest.raises(CheckpointNotAvailable, match=r"zoo convert simclrv2-r50-1x-sk1-imagenet.*"
                                                     r"gs://simclr-checkpoints/simclrv2/pretrained/r50_1x_sk1"):
        zoo.load("simclrv2-r50-1x-sk1-imagenet")
    for k in ("1x", "2x", "4x"):
        with pytest.raises(CheckpointNotAvailable, match=rf"zoo convert simclr-r50-{k}-imagenet.*"
                                                         rf"gs://simclr-checkpoints/simclrv1/pretrain/{k}"):
            zoo.load(f"simclr-r50-{k}-imagenet")


def test_v1_entries_build_the_network_a_v1_checkpoint_converts_into():
    """The released v1 entries' networks (no projection head) take every variable of a v1-layout checkpoint: the
    1x entry's init_args with the listing's 10 classes."""
    import zoo

    args = dict(zoo.info("simclr-r50-1x-imagenet").init_args, num_classes=10)
    state, b = _convert(_listed("r50_1x_v1"), SimCLR(**args))
    assert not any(k.startswith("net.g.") for k in state) and state["probe.weight"].shape == (10, 2048)


@pytest.mark.skipif(not (os.environ.get("ZOO_SIMCLR_CHECKOUT") and os.environ.get("ZOO_TF_KERAS_PYTHON")),
                    reason="needs a google-research/simclr checkout (ZOO_SIMCLR_CHECKOUT) and a Python with "
                           "tensorflow + tf-keras (ZOO_TF_KERAS_PYTHON); see tests/simclr_official_parity.py")
@pytest.mark.parametrize("sk,size,selector", [(False, 64, 0), (True, 57, 0), (True, 64, 1)])
def test_converted_model_equals_the_official_model(sk, size, selector):
    from simclr_official_parity import parity

    r = parity(os.environ["ZOO_SIMCLR_CHECKOUT"], os.environ["ZOO_TF_KERAS_PYTHON"], sk=sk, size=size,
               selector=selector)
    assert r["hiddens_max_abs_diff"] < 1e-4 * r["hiddens_max_abs"] + 1e-5
    assert r["logits_max_abs_diff"] < 1e-4 * r["logits_max_abs"] + 1e-5
