"""Pix2Seq-D (zoo.models.pix2seq.panoptic*): the scenes' panoptic PNGs are their masks, the COCO panoptic reader maps
segments to (semantic, identity) with void where COCO says so and refuses bad files, segment weights and the
majority vote match hand-worked values, panoptic quality counts as panopticapi does, the softmax head's expected bits
are the analog bits of its integer, a denoiser that knows the answer makes DDIM return the annotated map exactly,
one batch is overfitted, and a release loads bit-exact."""
import json

import numpy as np
import pytest
import torch
from conftest import round_trip, zoo_home_at
from PIL import Image

from zoo.data.panoptic import COCOPanoptic, id_to_rgb, panoptic_map, read_panoptic, rgb_to_id
from zoo.data.scenes import ScenePanopticDataModule
from zoo.metrics import PanopticQuality
from zoo.models.pix2seq import Pix2SeqPanoptic
from zoo.models.pix2seq.panoptic_model import BITS, FeaturePyramidMerge, majority_vote, segment_weights

TINY = dict(backbone="test_resnet", num_encoder_layers=1, dim_att=32, dim_mlp=64, num_heads=2, drop_path=0.0,
            drop_units=0.0, image_size=64, mask_size=32, fuse_dim=16, dim=16, transformer_layers=1,
            transformer_heads=2, transformer_mlp=64, max_instances=16, sample_steps=3, min_pixels=4)


@pytest.fixture(scope="module")
def scenes(idx_dir, tmp_path_factory):
    with zoo_home_at(tmp_path_factory.mktemp("zoo_home")):
        dm = ScenePanopticDataModule(source_dir=str(idx_dir), train_size=8, val_size=4, test_size=4, val_pool=40,
                                     canvas=64, max_size=32, image_size=64, mask_size=32, batch_size=4)
        dm.prepare_data()
        dm.setup("fit")
        yield dm


def test_scene_panoptic_pngs_are_the_masks(scenes):
    root = scenes.scene_dir
    data = json.loads((root / "annotations" / "panoptic_train.json").read_text())
    instances = json.loads((root / "annotations" / "instances_train.json").read_text())
    assert data["categories"][-1] == {"id": 11, "name": "background", "supercategory": "background", "isthing": 0}
    for ann in data["annotations"]:
        ids = rgb_to_id(np.asarray(Image.open(root / "annotations" / "panoptic_train" / ann["file_name"])))
        objects = [a for a in instances["annotations"] if a["image_id"] == ann["image_id"]]
        things = [s for s in ann["segments_info"] if s["category_id"] != 11]
        assert len(things) == len(objects) and ids.min() >= 1  # every pixel labelled: objects or background
        for seg, obj in zip(things, objects):
            assert seg["category_id"] == obj["category_id"] and seg["area"] == obj["area"] == (ids == seg["id"]).sum()
    assert scenes.categories[11] == {"name": "background", "isthing": False} and scenes.categories[1]["isthing"]


def test_reader_maps_segments_and_refuses_bad_files(tmp_path):
    ids = np.array([[0, 5, 5, 9], [7, 7, 9, 9]])
    assert panoptic_map(ids, [(5, 3, 0), (7, 4, 0), (9, 2, 1)]).tolist() == [
        [[0, 3, 3, 0], [4, 4, 0, 0]], [[0, 1, 1, 0], [2, 2, 0, 0]]]  # the crowd segment 9 is void
    assert panoptic_map(ids, [(5, 3, 0), (7, 4, 0)], torch.tensor([1, 0]))[1].tolist() == [[0, 2, 2, 0], [1, 1, 0, 0]]
    assert (rgb_to_id(id_to_rgb(np.array([[0, 1, 256, 70000]]))) == [[0, 1, 256, 70000]]).all()
    (tmp_path / "img").mkdir()
    (tmp_path / "png").mkdir()
    Image.new("RGB", (4, 2)).save(tmp_path / "img" / "a.jpg")
    Image.fromarray(id_to_rgb(ids)).save(tmp_path / "png" / "a.png")
    good = {"images": [{"id": 1, "file_name": "a.jpg", "height": 2, "width": 4}],
            "annotations": [{"image_id": 1, "file_name": "a.png", "segments_info": [
                {"id": 5, "category_id": 3}, {"id": 7, "category_id": 4}, {"id": 9, "category_id": 2, "iscrowd": 1}]}],
            "categories": [{"id": 2, "name": "b", "isthing": 1}, {"id": 3, "name": "c", "isthing": 1},
                           {"id": 4, "name": "d", "isthing": 0}]}
    file = tmp_path / "p.json"
    file.write_text(json.dumps(good))
    records, cats = read_panoptic(file, tmp_path / "png", tmp_path / "img")
    assert records[0]["segments"] == [(5, 3, 0), (7, 4, 0), (9, 2, 1)] and not cats[4]["isthing"]
    image, target = COCOPanoptic(file, tmp_path / "png", tmp_path / "img", 8, 4, train=False)[0]
    assert image.shape == (3, 8, 8) and target["orig_panoptic"].tolist() == panoptic_map(ids, records[0]["segments"]).tolist()
    assert target["panoptic"].shape == (2, 4, 4) and (target["panoptic"][:, 2:] == 0).all()  # padding is void
    bad = [({"images": [], "annotations": []}, ValueError, "no categories"),
           ({**good, "annotations": [{**good["annotations"][0], "file_name": "b.png"}]}, FileNotFoundError, "b.png"),
           ({**good, "annotations": [{**good["annotations"][0], "segments_info": [{"id": 5, "category_id": 8}]}]},
            ValueError, "category_id 8"),
           ({**good, "annotations": []}, ValueError, "no panoptic annotation"),
           ({**good, "categories": [{"id": 300, "name": "x"}]}, ValueError, "below 256")]
    for data, error, match in bad:
        file.write_text(json.dumps(data))
        with pytest.raises(error, match=match):
            read_panoptic(file, tmp_path / "png", tmp_path / "img")


def test_segment_weights_and_majority_vote_by_hand():
    identity = torch.tensor([[[1, 1, 1], [2, 0, 20]]])  # segment 1: 3 px, segment 2: 1 px, void: 1 px, 20: too big
    w = segment_weights(identity, max_instances=16, p=1.0)
    raw = torch.tensor([1 / 4, 1 / 4, 1 / 4, 1 / 2, 1 / 2, 0.0])
    assert torch.allclose(w.flatten(), raw * 6 / raw.sum())  # (1 / (size + 1))^p, mean 1 over the image
    assert torch.allclose(segment_weights(identity, 16, 0.0).flatten(), torch.tensor([1.2] * 5 + [0.0]))
    semantic = torch.tensor([[3, 3, 4, 0], [5, 5, 5, 2]])
    ident = torch.tensor([[1, 1, 1, 0], [2, 2, 2, 3]])
    sem, inst = majority_vote(semantic, ident, num_classes=6, min_pixels=2)
    assert sem.tolist() == [[3, 3, 3, 0], [5, 5, 5, 0]] and inst.tolist() == [[1, 1, 1, 0], [2, 2, 2, 0]]


def test_panoptic_quality_counts_as_panopticapi():
    t = torch.zeros(6, 6, 2, dtype=torch.long)
    t[..., 0] = 9  # stuff
    t[:3, :3] = torch.tensor([1, 1])  # thing A (9 px)
    t[3:, 3:] = torch.tensor([1, 2])  # thing B (9 px)
    t[0, 5] = torch.tensor([0, 0])  # void
    p = t.clone()
    p[3:, 3:] = torch.tensor([0, 0])  # B not predicted: a false negative even though it lies on predicted void
    p[1, 3:6] = torch.tensor([1, 7])  # a false thing on stuff: a false positive
    p[0, 5] = torch.tensor([9, 0])  # stuff predicted on the void pixel
    p[4, 0] = torch.tensor([1, 8])  # a one-pixel thing...
    t[4, 0] = torch.tensor([0, 0])  # ...on void: not a false positive
    metric = PanopticQuality([1], [9])
    metric.update(p, t)
    out = metric.compute()
    stuff_iou = 13 / (14 + 16 - 13 - 1)  # 14 predicted, 16 annotated, 13 shared; the union leaves out the void pixel
    assert out["pq_things"] == pytest.approx(1.0 / (1 + 0.5 * 1 + 0.5 * 1))  # A matched, B missed, one false thing
    assert out["pq_stuff"] == pytest.approx(stuff_iou)
    assert out["pq"] == pytest.approx((0.5 + stuff_iou) / 2) and out["sq"] == pytest.approx((1 + stuff_iou) / 2)
    everything_void = PanopticQuality([1], [9])
    everything_void.update(torch.zeros_like(t), t)
    assert float(everything_void.compute()["pq"]) == 0.0  # torchmetrics' PanopticQuality returns nan here
    with pytest.raises(ValueError, match="disjoint"):
        PanopticQuality([1], [1])


def test_expected_bits_and_an_oracle_denoiser_recover_the_map(scenes):
    torch.manual_seed(0)
    model = Pix2SeqPanoptic(**TINY, things=list(range(1, 11)), stuffs=[11])
    net = model.ema.eval()
    images, targets = next(iter(scenes.val_dataloader()))
    truth = torch.stack([t["panoptic"] for t in targets])
    one_hot = torch.nn.functional.one_hot(truth, 2**BITS).permute(0, 1, 4, 2, 3).float() * 50
    assert torch.allclose(net.expected_bits(one_hot), net.bits.encode(truth), atol=1e-6)
    net.logits = lambda x_t, gamma, cond: one_hot  # knows the answer whatever the noise
    assert torch.equal(net.sample(images, steps=4, td=1.0), truth)
    assert len(model.segment(images, targets)) == len(images)
    model.hparams.update(ablation_steps=[2], ablation_tds=[0.0, 1.0], ablation_images=4)
    found = model.analyse(None, scenes)
    assert sorted(found["metrics"]) == ["test/pq_2steps_td0", "test/pq_2steps_td1", "test/pq_one_stuff"]
    assert all(0 <= v <= 1 for v in found["metrics"].values()) and "| 2 | 1 |" in next(iter(found["tables"].values()))
    assert 0 < found["metrics"]["test/pq_one_stuff"] < 0.5  # the background right, every thing missed
    merged = FeaturePyramidMerge([8, 16, 32], [16, 8, 4], out_dim=12, out_size=32)
    fused = merged([torch.zeros(2, 8, 16, 16), torch.zeros(2, 16, 8, 8), torch.zeros(2, 32, 4, 4)])
    assert fused.shape == (2, 12, 32, 32) and merged.out_channels == 12
    same = FeaturePyramidMerge([8, 16, 32], [16, 8, 4], out_dim=12, out_size=16)
    assert same.final is None and same.out_channels == 8


def test_overfits_one_batch_and_scores_it(scenes):
    torch.manual_seed(0)
    model = Pix2SeqPanoptic(**TINY, things=list(range(1, 11)), stuffs=[11])
    images, targets = next(iter(scenes.train_dataloader()))
    panoptic = torch.stack([t["panoptic"] for t in targets])
    g = torch.Generator().manual_seed(0)
    first = float(model.model.loss(images, panoptic, torch.Generator().manual_seed(0)))
    assert first == pytest.approx(np.log(2**BITS), rel=1e-3)  # the zero-initialised head: uniform logits
    opt = torch.optim.AdamW(model.model.parameters(), lr=1e-2)
    for _ in range(40):
        loss = model.model.loss(images, panoptic, g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(model.model.loss(images, panoptic, torch.Generator().manual_seed(0))) < 0.5 * first
    before = [p.clone() for p in model.ema.parameters()]
    model.on_train_batch_end(None, None, 0)
    moved = [float((e - b).abs().max()) for e, b in zip(model.ema.parameters(), before)]
    assert max(moved) > 0  # the EMA follows the trained weights


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="ema_decay"):
        Pix2SeqPanoptic(**TINY, ema_decay=1.0)
    with pytest.raises(ValueError, match="max_instances"):
        Pix2SeqPanoptic(**{**TINY, "max_instances": 300})
    with pytest.raises(ValueError, match="multiple of the largest feature map"):
        Pix2SeqPanoptic(**{**TINY, "mask_size": 24})
    with pytest.raises(ValueError, match="multiple of mask_size"):
        ScenePanopticDataModule(image_size=64, mask_size=48)


def test_release_round_trip_and_figure(scenes, tmp_path):
    torch.manual_seed(0)
    model = Pix2SeqPanoptic(**TINY, things=list(range(1, 11)), stuffs=[11])
    back = round_trip(model, tmp_path, (torch.rand(2, 3, 64, 64), torch.randint(0, 5, (2, 2, 32, 32))))
    assert back.hparams.things == list(range(1, 11)) and back.hparams.stuffs == [11]
    (tmp_path / "fig").mkdir()
    figures = model.release_figures(tmp_path / "fig", scenes, images=3)
    assert list(figures) == ["panoptic.png"] and figures["panoptic.png"].stat().st_size > 1000


def test_encoder_starts_from_a_pix2seq_release(tmp_path):
    """encoder_from copies a Pix2seq detector's image encoder (stride-16 ResNet, projection, transformer) into the
    network and its EMA when fitting starts; the release of the Pix2Seq-D model does not need the source; a Pix2seq
    with another encoder, or a model of another kind, is refused with what differs."""
    import zoo
    from zoo.models.pix2seq import Pix2SeqDetector

    sizes = {k: TINY[k] for k in ("backbone", "num_encoder_layers", "dim_att", "dim_mlp", "num_heads", "image_size")}
    torch.manual_seed(1)
    detector = Pix2SeqDetector(**sizes, feature_stage=3, num_decoder_layers=1, dim_att_dec=16, dim_mlp_dec=32,
                               num_heads_dec=2, vocab_size=300, max_seq_len=20, max_instances=3,
                               max_instances_test=3, quantization_bins=100,
                               coord_vocab_shift=150)
    source = zoo.save_pretrained(detector, tmp_path / "detector")
    torch.manual_seed(0)
    model = Pix2SeqPanoptic(**TINY, encoder_from=str(source))
    before = {k: v.clone() for k, v in model.model.state_dict().items()}
    model.setup("fit")
    theirs = detector.model.state_dict()
    for net in (model.model, model.ema):
        for k, v in net.encoder.state_dict().items():
            assert torch.equal(v, theirs[k]), k
    assert all(torch.equal(v, before[k]) for k, v in model.model.state_dict().items() if not k.startswith("encoder."))
    assert "encoder_from" not in model.hparams
    back = zoo.load(str(zoo.save_pretrained(model, tmp_path / "d")))
    assert torch.equal(back.model.encoder.stem_projection.weight, theirs["stem_projection.weight"])

    with pytest.raises(ValueError, match="dim_att: 32 there, 16 here"):
        Pix2SeqPanoptic(**{**TINY, "dim_att": 16}, encoder_from=str(source)).setup("fit")
    stride32 = zoo.save_pretrained(Pix2SeqDetector(**sizes, num_decoder_layers=1, dim_att_dec=16, dim_mlp_dec=32,
                                                   num_heads_dec=2, vocab_size=300, max_seq_len=20, max_instances=3,
                                                   max_instances_test=3,
                                                   quantization_bins=100, coord_vocab_shift=150), tmp_path / "s32")
    with pytest.raises(ValueError, match="feature_stage: 4 there, 3 here"):
        Pix2SeqPanoptic(**TINY, encoder_from=str(stride32)).setup("fit")
    with pytest.raises(ValueError, match="must be a Pix2seq release"):
        Pix2SeqPanoptic(**TINY, encoder_from=str(tmp_path / "d")).setup("fit")
