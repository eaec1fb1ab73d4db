"""Pix2seq (paper 11): the official token ids and weights by hand; quantisation round trips within half a bin; the
noise objects of §2.3 are what the official augment_bbox draws; nucleus sampling keeps the official set; the cached
decoder gives exactly the full forward pass's logits; the module overfits a batch of the COCO fixture and
round-trips through a release."""
import pytest
import torch
from coco_fixture import write_coco_fixture
from conftest import round_trip

from zoo._errors import WeightsMismatchError
from zoo.data.coco import COCODetectionDataModule
from zoo.models.pix2seq import Pix2Seq, Pix2SeqDetector
from zoo.models.pix2seq.model import sincos, sincos_2d
from zoo.models.pix2seq.tokenizer import (FAKE_CLASS_TOKEN, NOISE_LABEL, add_noise_objects, build_sequences,
                                          decode_objects, pad_objects, quantize, sequence_loss, top_p_logits)

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = {"backbone": "test_resnet", "image_size": 64, "num_encoder_layers": 1, "dim_att": 32, "dim_mlp": 64,
        "num_heads": 2, "num_decoder_layers": 2, "dim_att_dec": 32, "dim_mlp_dec": 64, "num_heads_dec": 2,
        "vocab_size": 300, "max_seq_len": 24, "quantization_bins": 100, "coord_vocab_shift": 200, "max_instances": 4,
        "max_instances_test": 4}


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    dm = COCODetectionDataModule(str(write_coco_fixture(tmp_path_factory.mktemp("coco"))), image_size=64,
                                 batch_size=3)
    dm.setup()
    return next(iter(dm.val_dataloader()))


def test_token_ids_and_weights_by_hand():
    boxes = torch.tensor([[[0.1, 0.2, 0.25, 0.9], [0.0, 0.0, 0.0, 0.0]]])
    # 0.1 x 999 = 99.9 -> 100, 0.2 -> 199.8 -> 200, 0.25 -> 249.75 -> 250, 0.9 -> 899.1 -> 899; class 3 -> 103
    inputs, target, weights = build_sequences(boxes, torch.tensor([[3, 0]]), max_seq_len=12, corruption="none")
    assert target.tolist() == [[1100, 1200, 1250, 1899, 103] + [0] * 7]
    assert inputs.tolist() == [[10, 1100, 1200, 1250, 1899, 103] + [0] * 6]
    assert torch.allclose(weights, torch.tensor([[1.0] * 5 + [0.1] * 7]))
    # a noise object: FAKE class token 30, its coordinates weigh 0 and its class noise_bbox_weight
    noisy = torch.tensor([[[0.1, 0.2, 0.25, 0.9], [0.5, 0.5, 1.0, 1.0]]])
    inputs, target, weights = build_sequences(noisy, torch.tensor([[3, NOISE_LABEL]]), max_seq_len=12,
                                              noise_bbox_weight=0.7, corruption="none")
    assert target[0, 5:10].tolist() == [1500, 1500, 1999, 1999, FAKE_CLASS_TOKEN]
    assert torch.allclose(weights, torch.tensor([[1.0] * 5 + [0.0] * 4 + [0.7, 0.1, 0.1]]))
    # rand_n_fake_cls: every input class token becomes FAKE or a random class token, never the coordinates
    inputs, target, _ = build_sequences(noisy.expand(64, -1, -1), torch.tensor([[3, NOISE_LABEL]] * 64),
                                        max_seq_len=12, generator=torch.Generator().manual_seed(0))
    cls = inputs[:, [5, 10]]
    assert ((cls == FAKE_CLASS_TOKEN) | ((cls >= 100) & (cls < 1000))).all() and (cls == FAKE_CLASS_TOKEN).any()
    assert (cls != FAKE_CLASS_TOKEN).float().mean().item() == pytest.approx(0.5, abs=0.15)
    assert torch.equal(inputs[:, 1:5], target[:, 0:4]) and (target[:, 4] == 103).all()


@pytest.mark.parametrize("bins", [1000, 2000])
def test_encode_decode_round_trip_within_half_a_bin(bins):
    g = torch.Generator().manual_seed(0)
    corner = torch.rand(2, 6, 2, generator=g) * 0.5
    boxes = torch.cat([corner, corner + torch.rand(2, 6, 2, generator=g) * 0.5], -1)
    labels = torch.randint(1, 91, (2, 6), generator=g)
    _, target, _ = build_sequences(boxes, labels, bins, 1000, max_seq_len=31, corruption="none")
    seq = target[:, :30]
    logits = torch.nn.functional.one_hot(seq, 1000 + bins).float() * 30
    out, cls, scores = decode_objects(logits, seq, bins, 1000)
    assert (out - boxes).abs().max() <= 0.5 / (bins - 1) + 1e-6
    assert torch.equal(cls, labels) and (scores > 0.99).all()
    assert torch.equal(quantize(torch.tensor([0.0, 1.0, 1.3, -0.2]), bins), torch.tensor([0, bins - 1, bins - 1, 0]))


def test_noise_objects_follow_augment_bbox():
    g = torch.Generator().manual_seed(0)
    m, b = 10, 400
    real = torch.tensor([0.2, 0.3, 0.6, 0.7])
    boxes = torch.zeros(b, m, 4)
    boxes[:, 0] = real
    counts = torch.tensor([0, 1] * (b // 2))
    labels = torch.zeros(b, m, dtype=torch.long)
    labels[counts == 1, 0] = 5
    out, lab = add_noise_objects(boxes, labels, counts, g)
    assert torch.equal(out[counts == 1, 0], real.expand(b // 2, 4)) and (lab[counts == 1, 0] == 5).all()
    assert (lab[:, 1:] == NOISE_LABEL).all() and (lab[counts == 0] == NOISE_LABEL).all()
    assert (out >= 0).all() and (out <= 1).all() and (out[..., 2:] >= out[..., :2]).all()
    noise = out[counts == 1, 1:]
    dup = ((noise - real).abs() <= 0.1 * 0.4 + 1e-6).all(-1)  # a duplicate moves by at most 2 std = 0.1 x size
    # d ~ U{0..9} duplicates of the 9 noise objects: on average half; a shifted bad box keeps the real size
    assert dup.float().mean().item() == pytest.approx(0.5, abs=0.08)
    size = noise[..., 2:] - noise[..., :2]
    shifted = ~dup & ((size - 0.4).abs() < 1e-6).all(-1)
    # half the bad boxes (1/4 of the noise) are shifted; unclipped when the centre is in [0.2, 0.8]² (p = 0.36)
    assert 0.05 < shifted.float().mean().item() < 0.14
    # without real objects every noise box is a random box: no two images alike
    assert not torch.equal(out[0], out[2])


def test_training_sequences_have_the_papers_length_and_loss_mask():
    g = torch.Generator().manual_seed(1)
    boxes = [torch.tensor([[0.1, 0.1, 0.4, 0.5], [0.5, 0.5, 0.9, 0.8]]), torch.tensor([[0.2, 0.2, 0.3, 0.3]])]
    labels = [torch.tensor([1, 2]), torch.tensor([90])]
    padded, lab, counts = pad_objects(boxes, labels, 100, g)
    assert counts.tolist() == [2, 1] and sorted(lab[0, :2].tolist()) == [1, 2] and (lab[:, 2:] == 0).all()
    noisy, lab = add_noise_objects(padded, lab, counts, g)
    inputs, target, weights = build_sequences(noisy, lab, generator=g)
    assert inputs.shape == target.shape == weights.shape == (2, 512)  # 100 objects x 5 + the prompt, padded
    assert (inputs[:, 0] == 10).all() and (target[:, 500:] == 0).all()
    cls_w, coord_w = weights[:, 4:500:5], weights[:, :500].view(2, 100, 5)[..., :4]
    real = torch.arange(100)[None] < counts[:, None]
    assert (cls_w == 1).all() and torch.equal(coord_w == 1, real[..., None].expand(-1, -1, 4))
    assert (coord_w[~real] == 0).all() and (weights[:, 500:] == 0.1).all()
    assert (target[:, 4:500:5][~real] == FAKE_CLASS_TOKEN).all()
    logits = torch.zeros(2, 512, 3000)
    assert sequence_loss(logits, target, weights).item() == pytest.approx(torch.log(torch.tensor(3000.0)).item())


def test_without_sequence_augmentation_the_real_objects_are_followed_by_end_tokens(batch):
    targets = batch[1]
    for flag in (True, False):
        module = Pix2SeqDetector(**TINY, sequence_augmentation=flag)
        torch.manual_seed(0)
        _, target, weights = module.sequences(targets, train=True)
        n = torch.tensor([len(t["labels"]) for t in targets])
        objects = target[:, :20].view(len(targets), 4, 5)
        has_object = objects[..., 4] != 0
        if flag:  # noise objects (FAKE class) fill every slot after the real ones
            assert has_object.all() and (objects[..., 4][torch.arange(4) >= n[:, None]] == FAKE_CLASS_TOKEN).all()
        else:  # the real objects, then end tokens weighted eos_token_weight
            assert torch.equal(has_object, torch.arange(4) < n[:, None])
            assert (target[:, :20][~has_object.repeat_interleave(5, 1)] == 0).all()
            assert torch.allclose(weights[:, :20][~has_object.repeat_interleave(5, 1)], torch.tensor(0.1))


def test_nucleus_keeps_the_largest_set_within_p():
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()

    def kept(p):
        return (top_p_logits(logits, p) > -1e9).sum().item()

    assert kept(0.4) == 1  # nothing fits within 0.4: the most likely token alone
    assert kept(0.85) == 2  # 0.5 + 0.3 <= 0.85 < 0.95 (Hugging Face's top-p would keep 3)
    assert kept(0.96) == 3 and kept(1.0) == 4
    assert kept(0.0) == 1


def test_positions_and_shapes():
    assert torch.allclose(sincos(torch.tensor([0.0]), 4), torch.tensor([[0.0, 0.0, 1.0, 1.0]]))
    pos = sincos_2d(3, 5, 8)
    assert pos.shape == (15, 8)
    assert torch.equal(pos[5, :4], pos[9, :4]) and torch.equal(pos[5, 4:], pos[0, 4:])  # rows, then columns
    model = Pix2Seq("test_resnet", 1, 32, 64, 2, 2, 32, 64, 2, 300, 24)
    images = torch.rand(2, 3, 64, 96)
    memory = model.encode(images)
    assert memory.shape == (2, 2 * 3, 32)
    # the stem max-pool pads as TF's "SAME" does: windows start at pixel 0 (PyTorch's padding 1 gives 5, 7, 13, 15)
    assert model.backbone.maxpool(torch.arange(16.0).view(1, 1, 4, 4)).flatten().tolist() == [10, 11, 14, 15]
    assert model(images, torch.randint(0, 300, (2, 7))).shape == (2, 7, 300)


def test_cached_decoding_equals_the_full_forward_pass():
    torch.manual_seed(0)
    model = Pix2Seq("test_resnet", 1, 32, 64, 2, 2, 32, 64, 2, 300, 24).double().eval()
    images = torch.rand(2, 3, 64, 64, dtype=torch.float64)
    tokens = torch.randint(0, 300, (2, 16))
    memory = model.encode(images)
    full = model.decode(tokens, memory)
    cache = model.start_cache(memory, 16)
    steps = [model.decode_step(tokens[:, :3], cache)] + [model.decode_step(tokens[:, i:i + 1], cache)
                                                        for i in range(3, 16)]
    assert torch.allclose(torch.cat(steps, 1), full, rtol=0, atol=1e-12)
    prompt = torch.full((2, 1), 10)
    sampled, logits = model.generate(images, prompt, 21, top_p=0.9, generator=torch.Generator().manual_seed(0))
    assert sampled.shape == (2, 20) and logits.shape == (2, 20, 300)
    teacher = model.decode(torch.cat([prompt, sampled[:, :-1]], 1), memory)
    assert torch.allclose(logits, teacher, rtol=0, atol=1e-12)


def test_overfits_one_batch_and_detects_it(batch):
    torch.manual_seed(0)
    images, targets = batch
    module = Pix2SeqDetector(**TINY, drop_path=0.0, drop_units=0.0, top_p=0.0)
    opt = torch.optim.Adam(module.parameters(), lr=3e-3)
    inputs, target, weights = module.sequences(targets, train=False)
    losses = []
    for _ in range(80):
        loss = sequence_loss(module(images, inputs), target, weights)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.05 * losses[0]
    module.eval()
    boxes, labels, _ = module.detect(images)
    for b, lb, t in zip(boxes, labels, targets):
        n = len(t["labels"])
        assert torch.equal(lb[:n], t["labels"]) and (b[:n] - t["boxes"]).abs().max() < 2 / 99
    pred = module.predict_step(batch, 0)
    assert pred[0]["boxes"].shape == (4, 4) and pred[0]["scores"].shape == (4,)
    module.setup("validate")  # COCO box AP through torchmetrics (pycocotools), in the original images' pixels
    module.evaluate(batch, "val")
    assert module.ap["val"].compute()["map_50"] > 0.9


def test_training_step_and_release_round_trip(batch, tmp_path):
    torch.manual_seed(0)
    images, targets = batch
    module = Pix2SeqDetector(**TINY)
    assert torch.isfinite(module.training_step(batch, 0))
    with pytest.raises(ValueError, match="category id 90"):
        Pix2SeqDetector(**{**TINY, "coord_vocab_shift": 150, "vocab_size": 250}).sequences(targets, True)
    round_trip(module, tmp_path, images)


def test_pretrained_loads_a_release_when_fitting_starts(tmp_path):
    """`pretrained` (fine-tuning from a pre-trained detector) is read in setup("fit"), not when the model is built
    (so a recipe builds without the release), loads every weight, and refuses a release of other sizes."""
    import zoo

    torch.manual_seed(0)
    start = zoo.save_pretrained(Pix2SeqDetector(**TINY), tmp_path / "start")
    torch.manual_seed(1)
    module = Pix2SeqDetector(**TINY, pretrained=str(start))
    assert "pretrained" not in module.hparams
    before = {k: v.clone() for k, v in module.state_dict().items()}
    module.setup("validate")
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())
    module.setup("fit")
    loaded = zoo.load(str(start)).state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in module.state_dict().items())
    assert any(not torch.equal(before[k], v) for k, v in module.state_dict().items())
    with torch.no_grad():  # as a training step would change it
        next(module.parameters()).add_(1.0)
    changed = {k: v.clone() for k, v in module.state_dict().items()}
    module.setup("fit")  # loaded once: a second setup keeps what training changed
    assert all(torch.equal(changed[k], v) for k, v in module.state_dict().items())
    other = Pix2SeqDetector(**{**TINY, "dim_att_dec": 16, "dim_mlp_dec": 32}, pretrained=str(start))
    with pytest.raises(WeightsMismatchError, match="wrong shape"):
        other.setup("fit")
    with pytest.raises(ValueError, match="not both"):
        Pix2SeqDetector(**TINY, pretrained=str(start), weights=str(start))
