"""Bit Diffusion (arXiv 2208.04202): analog bits against hand-written codes, the schedule and both samplers against
the closed forms of the Gaussian process, self-conditioning's two passes, the asymmetric time grid, the U-Net's
shapes, overfitting a batch, the release round trip and the analysis."""
from __future__ import annotations

import math

import pytest
import torch
from conftest import round_trip
from torch import nn

import zoo
from zoo.models.bit_diffusion import AnalogBits, BitDiffusion, BitDiffusionModule, UNet
from zoo.models.bit_diffusion.model import (bits_to_int, cosine_gamma, ddim_step, ddpm_step, gray_code, int_to_bits,
                                            time_grid)

TINY = dict(dim=8, channel_mult=[1, 2], num_res_blocks=[1, 1], attention_at=[7], in_stride=2, head_dim=8)


@pytest.mark.parametrize("code", ["uint8", "gray", "uint8_s"])
def test_every_value_survives_analog_bits(code):
    v = torch.arange(256).view(4, 1, 8, 8)
    bits = AnalogBits(code, 8, 0.5)
    x = bits.encode(v)
    assert x.shape == (4, 8, 8, 8) and set(x.unique().tolist()) == {-0.5, 0.5}
    assert torch.equal(bits.decode(x), v)
    noisy = x + 0.3 * torch.randn_like(x).clamp(-1, 1)  # anything on the right side of 0 decodes the same
    assert torch.equal(bits.decode(noisy), v)


def test_bits_are_least_significant_first_channel_by_channel():
    """Value 6 = 0b110 in channel 0 and 1 in channel 1: bit channels 0..7 hold channel 0's bits LSB first."""
    v = torch.tensor([6, 1]).view(1, 2, 1, 1)
    x = AnalogBits("uint8", 8, 1.0).encode(v).flatten()
    assert x.tolist() == [-1, 1, 1, -1, -1, -1, -1, -1] + [1, -1, -1, -1, -1, -1, -1, -1]
    assert int_to_bits(torch.tensor(13), 4).tolist() == [1, 0, 1, 1]
    assert int(bits_to_int(torch.tensor([1, 0, 1, 1]))) == 13


def test_gray_code_neighbours_differ_in_one_bit():
    g = gray_code(8)
    assert sorted(g.tolist()) == list(range(256))
    flips = (int_to_bits(g[1:] ^ g[:-1], 8)).sum(-1)
    assert torch.all(flips == 1)
    assert g[:8].tolist() == [0, 1, 3, 2, 6, 7, 5, 4]


def test_random_code_is_the_papers_numpy_shuffle():
    """App. C: numpy.random.seed(42); numpy.random.shuffle(numpy.arange(256)); its first values are these."""
    table = AnalogBits("uint8_s").table
    assert table[:6].tolist() == [228, 6, 79, 206, 117, 185]
    with pytest.raises(ValueError, match="code must be one of"):
        AnalogBits("utf8")


def test_cosine_schedule_by_hand():
    t = torch.tensor([0.0, 0.5, 1.0])
    g = cosine_gamma(t)
    expected = [math.cos((x + 2e-4) / (1 + 2.5e-4) * math.pi / 2) ** 2 for x in (0.0, 0.5, 1.0)]
    assert torch.allclose(g.double(), torch.tensor(expected, dtype=torch.float64), atol=1e-7)
    assert g[0] > 0.9999 and g[2] < 1e-6
    assert torch.all(cosine_gamma(torch.linspace(0, 1, 101)).diff() < 0)


def test_time_grid_and_the_asymmetric_interval():
    assert time_grid(4) == [(1.0, 0.75), (0.75, 0.5), (0.5, 0.25), (0.25, 0.0)]
    assert time_grid(4, td=1) == [(1.0, 0.5), (0.75, 0.25), (0.5, 0.0), (0.25, 0.0)]
    with pytest.raises(ValueError):
        time_grid(0)


def test_ddpm_step_is_the_gaussian_posterior():
    """With the true ε and no noise, the DDPM step lands on the mean of q(x_s | x_t, x_0):
    (√γ_s β / (1 − γ_t)) x_0 + (√α (1 − γ_s) / (1 − γ_t)) x_t, with α = γ_t/γ_s and β = 1 − α."""
    torch.manual_seed(0)
    x0, eps = torch.randn(3, 5), torch.randn(3, 5)
    gt, gs = torch.tensor(0.3), torch.tensor(0.6)
    xt = gt.sqrt() * x0 + (1 - gt).sqrt() * eps
    alpha = gt / gs
    mean = (gs.sqrt() * (1 - alpha) / (1 - gt)) * x0 + (alpha.sqrt() * (1 - gs) / (1 - gt)) * xt
    assert torch.allclose(ddpm_step(xt, eps, gt, gs, torch.zeros_like(xt)), mean, atol=1e-6)
    assert torch.allclose(ddim_step(x0, eps, gs), gs.sqrt() * x0 + (1 - gs).sqrt() * eps)


class _Oracle(nn.Module):
    """A denoiser that knows the answer: it returns the analog bits of fixed images, whatever it is shown."""

    def __init__(self, x0: torch.Tensor):
        super().__init__()
        self.x0, self.seen = x0, []

    def forward(self, inp, gamma):
        self.seen.append((inp.clone(), gamma.clone()))
        return self.x0[: len(inp)]


@pytest.mark.parametrize("sampler,td", [("ddim", 0.0), ("ddim", 1.0), ("ddpm", 0.0)])
def test_samplers_with_a_perfect_denoiser_return_its_images(sampler, td):
    torch.manual_seed(0)
    model = BitDiffusion(image_size=8, **{**TINY, "attention_at": []})
    v = torch.randint(0, 256, (4, 1, 8, 8))
    oracle = _Oracle(model.bits.encode(v))
    out = model.sample(4, steps=5, td=td, sampler=sampler, net=oracle)
    assert torch.equal(out, v)
    gammas = [g[0].item() for _, g in oracle.seen]  # queried at 1, 0.8, ..., 0.2 whatever td
    assert gammas == pytest.approx(cosine_gamma(torch.tensor([1.0, 0.8, 0.6, 0.4, 0.2])).tolist(), abs=1e-7)
    # self-conditioning: zeros at the first step, then the previous step's estimate (the clipped answer)
    assert torch.all(oracle.seen[0][0][:, 8:] == 0) and torch.equal(oracle.seen[1][0][:, 8:], oracle.x0)


def test_self_conditioning_feeds_a_detached_estimate_to_the_first_half():
    torch.manual_seed(0)
    model = BitDiffusion(image_size=8, **{**TINY, "attention_at": []})
    calls = []
    model.f.register_forward_hook(lambda mod, args, out: calls.append((args[0], out)))
    loss = model.loss(torch.randint(0, 256, (6, 1, 8, 8)))
    (first_in, first_out), (second_in, _) = calls
    assert first_in.shape[0] == 3 and torch.all(first_in[:, 8:] == 0)  # x̃0 = f(x_t, 0, t) on half the batch
    sc = second_in[:, 8:]
    assert torch.equal(sc[:3], first_out.clamp(-1, 1)) and torch.all(sc[3:] == 0)
    assert not sc.requires_grad  # no backpropagation through the estimate
    loss.backward()
    no_sc = BitDiffusion(image_size=8, self_condition=False, **{**TINY, "attention_at": []})
    assert no_sc.f.conv_in.in_channels == 8 and model.f.conv_in.in_channels == 16


@pytest.mark.parametrize("in_stride,size,attention", [(1, 28, [7]), (2, 28, [7]), (1, 32, [16, 8])])
def test_unet_shapes(in_stride, size, attention):
    torch.manual_seed(0)
    net = UNet(16, 8, dim=8, channel_mult=[1, 2, 2], num_res_blocks=[1, 2, 1], attention_at=attention,
               image_size=size, in_stride=in_stride, head_dim=4)
    x = torch.randn(2, 16, size, size)
    out = net(x, torch.rand(2))
    assert out.shape == (2, 8, size, size)
    assert torch.all(out == 0)  # the output convolution starts at zero, as the official near-zero init
    nn.init.normal_(net.conv_out.weight)
    out = net(x, torch.rand(2))
    out.square().mean().backward()
    assert all(p.grad is not None for p in net.parameters())


@pytest.mark.parametrize("after", [False, True])
def test_unet_laterals_are_the_block_outputs_before_attention_as_the_official(after):
    """The official TransUNet saves each down block's output as a lateral and only then applies its attention;
    `lateral_after_attention=True` (the FMNIST entries' wiring) saves the attended output instead."""
    torch.manual_seed(0)
    net = UNet(8, 8, dim=8, channel_mult=[1, 2], num_res_blocks=[2, 1], attention_at=[8], image_size=8,
               head_dim=4, lateral_after_attention=after)
    saved, used = [], []
    level = net.down[0]
    for j, (block, attn) in enumerate(zip(level.blocks, level.attns)):
        block.register_forward_hook(lambda m, i, o: saved.append(("block", o.detach())))
        attn.register_forward_hook(lambda m, i, o: saved.append(("attention", o.detach())))
    for up in net.up:
        for block in up.blocks:
            block.register_forward_pre_hook(lambda m, i: used.append(i[0].detach()))
    net(torch.randn(2, 8, 8, 8), torch.rand(2))
    kind = "attention" if after else "block"
    expected = [t for k, t in saved if k == kind]
    other = [t for k, t in saved if k != kind]
    laterals = [u[:, -8:] for u in used if u.shape[-1] == 8]  # the full-resolution level's laterals (width 8)
    assert all(any(torch.equal(lat, e) for lat in laterals) for e in expected)
    assert not any(torch.equal(lat, o) for lat in laterals for o in other)


def test_overfits_one_batch():
    torch.manual_seed(0)
    module = BitDiffusionModule(image_size=28, **TINY, lr=3e-3, warmup_steps=1, fid_features=None)
    x = torch.rand(8, 1, 28, 28).round()  # black-and-white images: two levels
    opt = torch.optim.AdamW(module.model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(60):
        loss = module.model.loss(module.levels(x), g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-10:]) / 10 < 0.5 * sum(losses[:3]) / 3


def test_release_round_trip_and_sampling(tmp_path):
    torch.manual_seed(0)
    module = BitDiffusionModule(image_size=28, **TINY, sample_steps=3, fid_features=None)
    with torch.no_grad():
        for p in module.ema.parameters():
            p.add_(0.01 * torch.randn_like(p))
    x = torch.rand(4, 1, 28, 28)
    assert module(x).shape == () and torch.equal(module(x), module(x))
    s = module.sample(5, seed=1)
    assert s.shape == (5, 1, 28, 28) and torch.equal(s, module.sample(5, seed=1))
    assert torch.equal(s * 255, (s * 255).round())  # 256 grey levels, nothing in between
    back = round_trip(module, tmp_path, x)
    assert torch.equal(back.sample(5, seed=1), s)
    with pytest.raises(ValueError, match="sampler"):
        BitDiffusionModule(sampler="euler")


def test_analyse_with_a_tiny_classifier(fixture_data, tmp_path):
    torch.manual_seed(0)
    classifier = zoo.create("cnn", channels=[4], hidden=[8])
    release = zoo.save_pretrained(classifier, tmp_path / "classifier")
    module = BitDiffusionModule(image_size=28, **TINY, sample_steps=2, ablation_steps=[1], ablation_tds=[0.0, 1.0],
                                fid_features=str(release), fid_samples=40)
    out = module.analyse(tmp_path, fixture_data)
    m = out["metrics"]
    assert set(m) == {"fid_zoo_cnn/ddim_2steps", "fid_zoo_cnn/ddim_1steps_td0", "fid_zoo_cnn/ddim_1steps_td1",
                      "fid_zoo_cnn/real_heldout"}
    assert m["fid_zoo_cnn/real_heldout"] < m["fid_zoo_cnn/ddim_2steps"]  # untrained samples: further than real
    assert (tmp_path / "samples.png").stat().st_size > 1000
    assert "not Inception" in next(iter(out["tables"]))
