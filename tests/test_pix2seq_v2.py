"""Pix2seq v2 (zoo.models.pix2seq.multitask): the scenes' polygons and extreme points are what their masks say, the
COCO reader and transforms carry polygons and keypoints with the pixels, a model that outputs the annotations'
tokens scores AP 1 on both instance tasks (so the decoding, rasterising and OKS paths are exact), the multi-task step
sums the task losses, one batch of each task is overfitted, and a release loads bit-exact."""
import json

import numpy as np
import pytest
import torch
from conftest import round_trip, zoo_home_at

from zoo.data.coco import COCODetection, COCOInstances, load_image, points_to_pixels, read_coco
from zoo.data.scenes import SceneDetectionDataModule, extreme_points, mask_polygons
from zoo.models.pix2seq import Pix2SeqMultiTask
from zoo.models.pix2seq.captions import (caption_training_sequences, caption_words, tokens_to_pieces,
                                         train_tokenizer)
from zoo.models.pix2seq.tasks import points_to_tokens
from zoo.models.pix2seq.multitask import pad_instances, polygons_from_points, rasterise

TASKS = ["detection", "instance_segmentation", "keypoints"]
ALL = [*TASKS, "captioning"]
TINY = dict(backbone="test_resnet", image_size=64, num_encoder_layers=1, dim_att=32, dim_mlp=64, num_heads=2,
            num_decoder_layers=1, dim_att_dec=32, dim_mlp_dec=64, num_heads_dec=2, vocab_size=584, max_seq_len=80,
            text_vocab_shift=456, caption_max_len=48, caption_vocab_size=128,
            quantization_bins=256, coord_vocab_shift=200, max_instances=8, max_instances_test=8,
            max_points_per_object=32, num_keypoints=4, keypoint_sigmas=[0.05] * 4, ensemble_num_samples=2,
            drop_path=0.0, drop_units=0.0)


@pytest.fixture(scope="module")
def scenes(idx_dir, tmp_path_factory):
    with zoo_home_at(tmp_path_factory.mktemp("zoo_home")):
        dm = SceneDetectionDataModule(source_dir=str(idx_dir), train_size=8, val_size=4, test_size=4, val_pool=40,
                                      canvas=64, max_size=32, image_size=64, min_scale=1.0, max_scale=1.0,
                                      batch_size=4, tasks=ALL, max_points=32)
        dm.prepare_data()
        dm.setup("fit")
        yield dm


def test_polygons_outline_the_mask_and_extreme_points_are_its_extremes():
    mask_utils = pytest.importorskip("pycocotools.mask")
    mask = np.zeros((40, 40), bool)
    mask[5:30, 6:20] = True
    mask[10:14, 10:14] = False  # a hole: COCO polygons leave it out
    mask[32:38, 25:39] = True  # a second part
    polys = mask_polygons(mask, max_points=64)
    assert len(polys) == 2 and sum(len(p) // 2 for p in polys) + 1 <= 64
    drawn = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polys, 40, 40))).astype(bool)
    filled = mask.copy()
    filled[10:14, 10:14] = True
    assert (drawn & filled).sum() / (drawn | filled).sum() > 0.9
    assert sum(len(p) for p in mask_polygons(mask, max_points=6)) // 2 + 1 <= 6  # simplified until it fits
    visible = mask.copy()
    visible[5, :] = False
    assert extreme_points(mask, visible) == [13.5, 5.5, 1, 32.5, 37.5, 2, 6.5, 17.5, 2, 38.5, 35.5, 2]


def test_coco_points_move_with_their_pixels(scenes):
    """Every scene keypoint sits on its object's ink after the training transform, and on the pixel it names in the
    original image once mapped back; polygons map back to the annotation within rounding."""
    root = scenes.scene_dir
    data = json.loads((root / "annotations" / "instances_train.json").read_text())
    assert data["categories"][0]["keypoints"] == ["top", "bottom", "left", "right"]
    records, _ = read_coco(root / "annotations" / "instances_train.json", root / "train", ("polygon", "keypoints"), 32)
    first = data["annotations"][0]
    kp = records[0]["keypoints"][0].view(-1, 2)
    assert torch.allclose(kp, torch.tensor(first["keypoints"]).view(-1, 3)[:, [1, 0]] / 64)
    ds = COCODetection(root / "annotations" / "instances_test.json", root / "test", 64, False, points=("polygon",),
                       max_points=32)
    image, target = ds[0]
    back = points_to_pixels(target["polygon"][0], target, 64)
    poly = json.loads((root / "annotations" / "instances_test.json").read_text())["annotations"][0]["segmentation"][0]
    assert torch.allclose(back[:len(poly) // 2].flatten(), torch.tensor(poly), atol=1e-3)
    kds = COCOInstances(root / "annotations" / "instances_train.json", root / "train", 64, True, 1.0, 1.0,
                        category=None)
    by_image = {}
    for a in data["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    assert len(kds) == len(data["annotations"])
    for i in range(len(kds)):
        crop, t = kds[i]
        k, j = kds.index[i]
        want = torch.tensor(by_image[kds.records[k]["id"]][j]["keypoints"]).view(-1, 3)[:, :2]
        back = points_to_pixels(t["keypoints"][0], t, 64)
        assert torch.allclose(back, want, atol=1.0), (back, want)  # through crop, resize and padding and back
        full = load_image(kds.records[k]["path"])
        y0, x0 = t["crop_offset"].tolist()
        h, w = t["orig_size"].tolist()
        assert 0 <= y0 and y0 + h <= full.shape[1] and 0 <= x0 and x0 + w <= full.shape[2]


def test_oracle_tokens_score_ap_one(scenes, monkeypatch):
    """A model whose sampler returns the annotation's own tokens gets keypoint AP 1 and segmentation AP 1 at IoU 0.5."""
    pytest.importorskip("pycocotools")
    model = Pix2SeqMultiTask(**TINY)
    model.setup("test")
    hp = model.hparams

    def oracle(task, key):
        def generate(images, prompt, max_len, *args, memory=None, **kw):
            seqs = []
            for t in current:
                n = hp.max_instances_per_image_seg if task == "instance_segmentation" else 1
                pts = torch.full((n, 2 * (32 if key == "polygon" else 4)), -1.0)
                pts[:min(n, len(t[key]))] = t[key][:n]
                lab = torch.zeros(n, dtype=torch.long)
                lab[:min(n, len(t["labels"]))] = t["labels"][:n]
                seqs.append(points_to_tokens(pts, lab, hp.quantization_bins, hp.coord_vocab_shift))
            tokens = torch.stack(seqs).repeat_interleave(len(prompt) // (len(current) * seqs[0].shape[0]), 1)
            tokens = tokens.flatten(0, 1)
            logits = torch.full((*tokens.shape, hp.vocab_size), -30.0).scatter(-1, tokens[..., None], 30.0)
            return tokens, logits
        return generate

    for i, task in enumerate(TASKS[1:], 1):
        key = "polygon" if task == "instance_segmentation" else "keypoints"
        monkeypatch.setattr(model.model, "generate", oracle(task, key))
        for images, targets in scenes.test_dataloader()[i]:
            current = targets
            model.evaluate_task((images, targets), "test", i)
    segm, kpt = model.task_ap["test_segm"].compute(), model.task_ap["test_kpt"].compute()
    # quantisation moves polygon corners by up to 1/8 pixel here: every mask matches at IoU 0.5, nearly all at 0.95
    assert float(segm["map_50"]) == pytest.approx(1.0) and float(segm["map"]) > 0.95
    assert kpt["map"] == pytest.approx(1.0)

    # prompted with the model's own detections (the official README's evaluation): each detected object's mask,
    # class and detection score; slots detected as nothing (class 0) give no mask
    detected = Pix2SeqMultiTask(**TINY, instance_boxes="detected", detected_prompts="first")
    detected.model.generate = oracle("instance_segmentation", "polygon")
    images, targets = next(iter(scenes.test_dataloader()[1]))
    current = targets
    seen = {}

    def detect(images, generator=None, objects=None, memory=None):
        seen.update(objects=objects, memory=memory is not None)
        boxes, labels, _ = pad_instances(targets, "polygon", objects)
        return boxes, labels, torch.linspace(0.9, 0.5, objects).expand(len(images), -1) * (labels > 0)

    detected.detect = detect
    out = detected.segment(images, targets)
    assert seen == {"objects": hp.max_instances_per_image_seg, "memory": True}
    for p, t in zip(out, targets):
        n = min(len(t["labels"]), hp.max_instances_per_image_seg)
        assert p["masks"].shape[0] == n and p["labels"].tolist() == t["labels"][:n].tolist()
        assert torch.allclose(p["scores"], torch.linspace(0.9, 0.5, hp.max_instances_per_image_seg)[:n])
    # the official evaluation: the highest-scoring of max_instances_test detections, best first
    from zoo.models.pix2seq.multitask import top_detections

    top = Pix2SeqMultiTask(**TINY, instance_boxes="detected")
    top.model.generate = oracle("instance_segmentation", "polygon")

    def detect_rising(images, generator=None, objects=None, memory=None):
        seen.update(objects=objects)
        boxes, labels, _ = pad_instances(targets, "polygon", objects)
        return boxes, labels, torch.linspace(0.5, 0.9, objects).expand(len(images), -1) * (labels > 0)

    top.detect = detect_rising
    out = top.segment(images, targets)
    assert seen["objects"] == hp.max_instances_test
    _, labels, scores = top_detections(*detect_rising(images, None, hp.max_instances_test),
                                       hp.max_instances_per_image_seg)
    for p, lab, sc in zip(out, labels, scores):
        assert p["labels"].tolist() == lab[lab > 0].tolist() and torch.allclose(p["scores"], sc[lab > 0])
    with pytest.raises(ValueError, match="add 'detection' to tasks"):
        Pix2SeqMultiTask(**{**TINY, "tasks": ["instance_segmentation"]}, instance_boxes="detected")


def test_keypoints_on_detected_boxes_crop_as_the_data_does(scenes):
    """Prompted with detections equal to the annotated boxes, the crops cut from the model's input and their prompts
    are the data's annotated crops exactly (the scenes' input is the original image), so answering each with its
    annotated keypoints scores AP 1 over whole images; detections of other categories get none."""
    pytest.importorskip("pycocotools")
    from zoo.models.pix2seq.tasks import KEYPOINT_TASK, instance_prompt

    model = Pix2SeqMultiTask(**TINY, keypoint_boxes="detected", keypoint_category=None)
    model.setup("test")
    hp = model.hparams
    crops = scenes.task_sets["test"]["keypoints"]
    answers = []
    for i in range(len(crops)):
        crop, t = crops[i]
        prompt = instance_prompt(KEYPOINT_TASK, t["boxes"][:1], t["labels"][:1], hp.quantization_bins,
                                 hp.coord_vocab_shift)[0]
        answers.append((crop, prompt, points_to_tokens(t["keypoints"][:1], t["labels"][:1], hp.quantization_bins,
                                                       hp.coord_vocab_shift)[0]))
    asked = []

    def generate(images, prompt, max_len, *args, **kw):
        tokens = []
        for im, q in zip(images, prompt):
            match = [a for c, p, a in answers if torch.equal(p, q) and torch.allclose(c, im, atol=1e-6)]
            assert len(match) == 1
            tokens.append(match[0])
            asked.append(q)
        tokens = torch.stack(tokens)
        return tokens, torch.full((*tokens.shape, hp.vocab_size), -30.0).scatter(-1, tokens[..., None], 30.0)

    model.model.generate = generate
    whole = scenes.whole_keypoint_images()
    whole.setup("test")
    loader = whole.test_dataloader()[ALL.index("keypoints")]
    for images, targets in loader:
        assert "crop_offset" not in targets[0] and len(targets[0]["keypoints"]) == len(targets[0]["labels"])
        model.detect = lambda images, generator=None, objects=None, memory=None: (
            *pad_instances(targets, "keypoints", 8)[:2], torch.ones(len(images), 8))
        model.evaluate_task((images, targets), "test", ALL.index("keypoints"))
    assert len(asked) == len(answers)
    assert model.task_ap["test_kpt"].compute()["map"] == pytest.approx(1.0)

    from zoo.data.coco import COCODetectionDataModule  # a category's whole images, as COCO's persons

    persons = COCODetectionDataModule(str(scenes.scene_dir), "train", "val", "test", 64, tasks=["keypoints"],
                                      keypoint_file="instances_{split}.json", keypoint_category=3,
                                      keypoint_eval_images=True)
    persons.setup("test")
    kept = [t for _, t in persons.task_sets["test"]["keypoints"]]
    annotations = json.loads((scenes.scene_dir / "annotations" / "instances_test.json").read_text())["annotations"]
    assert len(kept) == 4 and all((t["labels"] == 3).all() for t in kept)
    assert sum(len(t["labels"]) for t in kept) == sum(a["category_id"] == 3 for a in annotations)

    model.hparams.keypoint_category = 99  # no detection of that category: no crops, no keypoints
    found = model.keypoints_on_detections(images, targets)
    assert [len(f["keypoints"]) for f in found] == [0] * len(targets)
    annotated = Pix2SeqMultiTask(**TINY)
    with pytest.raises(ValueError, match="keypoint_eval_images to false"):
        annotated.predict_step((images, targets), 0, ALL.index("keypoints"))
    with pytest.raises(ValueError, match="keypoint_eval_images to true"):
        model.predict_step(next(iter(scenes.test_dataloader()[ALL.index("keypoints")])), 0, ALL.index("keypoints"))
    with pytest.raises(ValueError, match="add 'detection' to tasks"):
        Pix2SeqMultiTask(**{**TINY, "tasks": ["keypoints"]}, keypoint_boxes="detected")


def test_keypoint_ap_over_whole_images_by_hand():
    """One image, two annotated objects: a perfect prediction ranked first and one far from both ranked second give
    precision 1 up to recall 1/2 and nothing after, so AP = 51/101 on COCO's 101 recall points at every OKS
    threshold; the same predictions ranked the other way round lose the first recall step's precision."""
    pytest.importorskip("pycocotools")
    from zoo.metrics import KeypointAP

    truth = torch.tensor([[0.2, 0.2, 0.3, 0.3], [0.6, 0.6, 0.8, 0.8]])  # normalised y, x pairs
    target = {"image_id": torch.tensor(7), "keypoints": truth, "boxes": torch.tensor([[0.1, 0.1, 0.4, 0.4],
                                                                                      [0.5, 0.5, 0.9, 0.9]]),
              "area": torch.tensor([900.0, 1600.0]), "iscrowd": torch.tensor([False, False]),
              "orig_size": torch.tensor([100, 100]), "unpadded_size": torch.tensor([100, 100])}
    exact = truth[0].view(2, 2).flip(-1) * 100  # x, y pixels
    far = torch.tensor([[5.0, 95.0], [95.0, 5.0]])
    for scores, want in (([0.9, 0.8], 51 / 101), ([0.8, 0.9], 51 / 101 * 0.5)):
        metric = KeypointAP([0.05, 0.05])
        metric.update([torch.stack([exact, far])], [torch.tensor(scores)], [target], 100, whole_images=True)
        assert metric.compute()["map"] == pytest.approx(want, abs=1e-3)


def test_polygon_decoding_and_rasterising():
    pts = torch.tensor([1.0, 1.0, 9.0, 1.0, 9.0, 9.0, -2.0, -2.0, 12.0, 12.0, 15.0, 12.0, 15.0, 15.0, -1.0, -1.0,
                        3.0, 3.0])
    polys = polygons_from_points(pts)
    assert polys == [[1.0, 1.0, 9.0, 1.0, 9.0, 9.0], [12.0, 12.0, 15.0, 12.0, 15.0, 15.0]]
    mask = rasterise(polys, 20, 20)
    assert mask[3, 7] and not mask[7, 3] and mask[13, 14] and not mask[0, 19]  # below the diagonal only
    assert not rasterise([], 4, 4).any()


def test_multitask_loss_is_the_weighted_sum_and_overfits(scenes):
    torch.manual_seed(0)
    batch = {t: next(iter(loader)) for t, loader in scenes.train_dataloader().items()}
    weights = [1.0, 0.5, 2.0, 1.0]
    model = Pix2SeqMultiTask(**TINY, tasks=ALL, task_weights=weights, lr=3e-3, warmup_epochs=0.0)
    model.set_caption_tokenizer(train_tokenizer(scenes.caption_texts(), 128))
    model.eval()
    parts = [model.task_loss(t, *batch[t], train=False) for t in ALL]
    inp, target, w, labels = model.instance_sequences("keypoints", batch["keypoints"][1], train=False)
    assert inp.shape == (4, 1, 14) and labels.shape == (4, 1) and (w[..., :5] == 0).all()
    inp, target, w = model.caption_sequences(batch["captioning"][1], train=False)
    assert inp.shape == target.shape == w.shape == (4, 5, 48)
    seen = {}
    model.log = lambda *a, **k: None
    model.task_loss, task_loss = (lambda task, images, targets, train: seen.setdefault(task, (train, len(images)))
                                  and torch.tensor(float(ALL.index(task) + 1))), model.task_loss
    assert float(model.training_step(batch, 0)) == 1.0 + 0.5 * 2 + 2.0 * 3 + 1.0 * 4
    assert seen == {t: (True, 4) for t in ALL}  # each task's own batch, with training's sequences
    model.task_loss = task_loss
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = sum(float(p) for p in parts)
    model.train()
    for _ in range(60):
        loss = sum(model.task_loss(t, *batch[t], train=False) * w for t, w in zip(ALL, weights))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    after = [float(model.task_loss(t, *batch[t], train=False)) for t in ALL]
    assert all(a < 0.5 * float(b) for a, b in zip(after, parts)), (after, parts)
    assert first > sum(after)


def test_caption_sequences_follow_the_official_layout():
    """[13, pieces + shift, end + shift, 0...] shifted into input and target; weight 0.1 on the end target, 1 on the
    padding after it, 0 for a missing caption; input tokens (the prompt too) dropped to 30 at the given rate."""
    ids = [[[5, 6, 1], [7, 1]], [[8, 9, 10, 11, 12, 1]]]
    inp, target, w = caption_training_sequences(ids, captions_per_image=2, max_len=4, shift=100, eos_token_weight=0.1)
    assert inp.shape == (2, 2, 4)
    assert inp[0, 0].tolist() == [13, 105, 106, 101] and target[0, 0].tolist() == [105, 106, 101, 0]
    assert w[0, 0].tolist() == pytest.approx([1.0, 1.0, 0.1, 1.0])
    assert inp[0, 1].tolist() == [13, 107, 101, 0] and w[0, 1].tolist() == pytest.approx([1.0, 0.1, 1.0, 1.0])
    assert target[1, 0].tolist() == [108, 109, 110, 111]  # cut at max_len pieces: the end is lost
    assert (w[1, 1] == 0).all() and (target[1, 1] == 0).all()  # the image has one caption
    g = torch.Generator().manual_seed(0)
    dropped, _, _ = caption_training_sequences([[list(range(3, 400)) + [1]]] * 8, 1, 300, 100, 0.1, 0.5, g)
    share = (dropped == 30).float().mean()
    assert 0.45 < share < 0.55 and (dropped[..., 0] == 30).any() and (dropped[..., 0] == 13).any()
    assert tokens_to_pieces(torch.tensor([[105, 99, 900, 101, 107], [0, 105, 106, 101, 0]]), 100, 50) == [
        [5, 0, 49], []]  # below the shift clipped to 0, beyond the pieces to the last; cut at end or padding


def test_caption_tokenizer_is_trained_on_the_data_and_travels_with_the_model(scenes, tmp_path):
    from types import SimpleNamespace

    import zoo

    texts = scenes.caption_texts()
    assert len(texts) == 5 * 8 and all(isinstance(t, str) for t in texts)
    model = Pix2SeqMultiTask(**{**TINY, "tasks": ["captioning"]})
    with pytest.raises(RuntimeError, match="no caption tokenizer"):
        model.tokenizer
    model._trainer = SimpleNamespace(datamodule=scenes)
    model.setup("fit")
    trained = model.caption_tokenizer.clone()
    assert bytes(trained.numpy()) == train_tokenizer(texts, 128)  # deterministic: every DDP rank trains the same
    tok = model.tokenizer
    assert tok.decode(tok.encode(texts[:3])) == texts[:3] and all(ids[-1] == 1 for ids in tok.encode(texts))
    model._trainer = None
    torch.manual_seed(0)
    back = round_trip(model, tmp_path, torch.rand(2, 3, 64, 64))
    assert torch.equal(back.caption_tokenizer, trained)
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    images = torch.rand(2, 3, 64, 64)
    assert model.caption(images, g1) == back.caption(images, g2)
    fresh = Pix2SeqMultiTask(**{**TINY, "tasks": ["captioning"]}, weights=str(tmp_path / "release"))
    assert torch.equal(fresh.caption_tokenizer, trained)  # fine-tuning starts from the release's tokenizer
    small = Pix2SeqMultiTask(**{**TINY, "tasks": ["captioning"], "vocab_size": 460})
    with pytest.raises(ValueError, match="vocab_size must be at least"):
        small.set_caption_tokenizer(bytes(trained.numpy()))
    with pytest.raises(RuntimeError, match="caption_texts"):
        Pix2SeqMultiTask(**{**TINY, "tasks": ["captioning"]}).setup("fit")
    assert zoo  # imported for the round trip's registry


def test_oracle_caption_scores_bleu_one(scenes, monkeypatch):
    """A model whose sampler returns a reference caption's tokens decodes that caption and scores BLEU-4 1; scored
    against the next image's references instead (`analyse`) it scores less."""
    model = Pix2SeqMultiTask(**{**TINY, "tasks": ["captioning"]})
    model.set_caption_tokenizer(train_tokenizer(scenes.caption_texts(), 128))
    model.setup("test")
    hp, tok = model.hparams, model.tokenizer
    loader = scenes.test_dataloader()[ALL.index("captioning")]
    reference = {float(im.sum()): t["captions"][2] for images, targets in loader for im, t in zip(images, targets)}

    def generate(images, prompt, max_len, *args, **kw):
        assert (prompt == 13).all() and max_len == hp.caption_max_len + 1
        tokens = torch.zeros(len(images), hp.caption_max_len, dtype=torch.long)
        for i, im in enumerate(images):
            row = tok.encode([reference[float(im.sum())]])[0]
            tokens[i, :len(row)] = torch.tensor(row) + hp.text_vocab_shift
        return tokens, torch.zeros(*tokens.shape, hp.vocab_size)

    monkeypatch.setattr(model.model, "generate", generate)
    for images, targets in loader:
        assert model.caption(images) == [t["captions"][2] for t in targets]
        model.evaluate_task((images, targets), "test", 0)
    assert float(model.task_ap["test_cap"].compute()) == pytest.approx(1.0)
    mismatched = model.analyse(None, scenes)["metrics"]["test/bleu4_mismatched"]
    assert 0 <= mismatched < 0.9
    assert caption_words("A red-ish Bag, on its own.") == "a red-ish bag on its own"


def test_bad_task_arguments_are_refused():
    with pytest.raises(ValueError, match="name each of"):
        Pix2SeqMultiTask(**{**TINY, "tasks": ["detection", "panoptic"]})
    with pytest.raises(ValueError, match="text_vocab_shift 400 must be at least"):
        Pix2SeqMultiTask(**{**TINY, "tasks": ["captioning"], "text_vocab_shift": 400})
    with pytest.raises(ValueError, match="caption_max_len 90"):
        Pix2SeqMultiTask(**{**TINY, "tasks": ["captioning"], "caption_max_len": 90})
    with pytest.raises(ValueError, match="task_weights has 1"):
        Pix2SeqMultiTask(**TINY, task_weights=[1.0])
    with pytest.raises(ValueError, match="one per keypoint"):
        Pix2SeqMultiTask(**{**TINY, "keypoint_sigmas": [0.05]})
    with pytest.raises(ValueError, match="cannot hold a prompt"):
        Pix2SeqMultiTask(**{**TINY, "max_seq_len": 60})
    with pytest.raises(ValueError, match="choose among"):
        SceneDetectionDataModule(tasks=["segmentation"])


def test_release_round_trip(tmp_path):
    torch.manual_seed(0)
    back = round_trip(Pix2SeqMultiTask(**TINY), tmp_path, torch.rand(2, 3, 64, 64))
    assert back.hparams.tasks == TASKS and back.hparams.keypoint_sigmas == [0.05] * 4


def test_release_figures_show_masks_and_keypoints(scenes, tmp_path):
    pytest.importorskip("pycocotools")
    torch.manual_seed(0)
    model = Pix2SeqMultiTask(**TINY, tasks=ALL)
    model.set_caption_tokenizer(train_tokenizer(scenes.caption_texts(), 128))
    figures = model.release_figures(tmp_path, scenes, images=2)
    assert sorted(figures) == ["captions.png", "detections.png", "instances.png", "keypoints.png"]
    assert all(p.stat().st_size > 1000 for p in figures.values())
    whole = Pix2SeqMultiTask(**TINY, tasks=ALL, keypoint_boxes="detected", keypoint_category=None)
    whole.caption_tokenizer = model.caption_tokenizer
    (tmp_path / "whole").mkdir()
    figures = whole.release_figures(tmp_path / "whole", scenes.whole_keypoint_images(), images=2)
    assert figures["keypoints.png"].stat().st_size > 1000


def test_analyse_also_scores_the_instance_tasks_on_detected_boxes(scenes, tmp_path):
    """A model evaluated on annotated boxes is also scored on its own detections (and captions on mismatched
    references); it keeps its annotated-box settings afterwards."""
    pytest.importorskip("pycocotools")
    torch.manual_seed(0)
    model = Pix2SeqMultiTask(**TINY, tasks=ALL, keypoint_category=None)
    model.set_caption_tokenizer(train_tokenizer(scenes.caption_texts(), 128))
    metrics = model.analyse(tmp_path, scenes)["metrics"]
    assert sorted(metrics) == sorted(["test/bleu4_mismatched", *(f"test/{t}_detected_{k}" for t in ("segm", "kpt")
                                                                  for k in ("map", "map_50", "map_75"))])
    assert all(v == -1.0 or 0.0 <= v <= 1.0 for v in metrics.values())
    assert model.hparams.instance_boxes == model.hparams.keypoint_boxes == "annotated"
    _, targets = next(iter(scenes.test_dataloader()[ALL.index("instance_segmentation")]))
    empty = {k: (v[:0] if k in ("boxes", "labels", "iscrowd", "area", "polygon") else v) for k, v in targets[0].items()}
    assert model._mask_truth([empty])[0]["masks"].shape == (0, 64, 64)  # an image without objects (COCO has 48)


def test_captions_reader_refuses_bad_files_and_augments(tmp_path):
    from PIL import Image

    from zoo.data.coco import COCOCaptions, read_captions

    (tmp_path / "img").mkdir()
    Image.new("RGB", (40, 30), (200, 30, 30)).save(tmp_path / "img" / "a.png")
    good = {"images": [{"id": 1, "file_name": "a.png", "height": 30, "width": 40}],
            "annotations": [{"id": 1, "image_id": 1, "caption": "a red square"},
                            {"id": 2, "image_id": 1, "caption": "red"}]}
    file = tmp_path / "captions.json"
    file.write_text(json.dumps(good))
    assert read_captions(file, tmp_path / "img")[0]["captions"] == ["a red square", "red"]
    bad = [({"images": []}, ValueError, "no annotations"),
           ({**good, "images": [{**good["images"][0], "file_name": "b.png"}]}, FileNotFoundError, "not in"),
           ({**good, "annotations": [{"id": 3, "image_id": 7, "caption": "x"}]}, ValueError, "image 7"),
           ({**good, "annotations": [{"id": 4, "image_id": 1}]}, ValueError, "no 'caption'")]
    for data, error, match in bad:
        file.write_text(json.dumps(data))
        with pytest.raises(error, match=match):
            read_captions(file, tmp_path / "img")
    file.write_text(json.dumps(good))
    torch.manual_seed(0)
    plain = COCOCaptions(file, tmp_path / "img", 48, train=True, min_scale=1.0, max_scale=1.0, color_jitter=0.0)
    jittered = COCOCaptions(file, tmp_path / "img", 48, train=True, min_scale=1.0, max_scale=1.0, color_jitter=1.0)
    image, target = plain[0]
    assert image.shape == (3, 48, 48) and target["captions"] == ["a red square", "red"]
    assert target["unpadded_size"].tolist() == [36, 48] and (image[:, 36:] == 0.3).all()  # padded with 0.3
    assert torch.allclose(image[:, :36].mean((1, 2)), torch.tensor([200, 30, 30]) / 255, atol=1e-3)
    changed = [not torch.allclose(jittered[0][0][:, :36], image[:, :36], atol=0.02) for _ in range(10)]
    assert sum(changed) >= 5 and (jittered[0][0][:, 36:] == 0.3).all()  # distorted before the padding


def test_coco_segmentation_jitters_up_to_one_as_the_official_while_detection_goes_to_two(scenes):
    """The official instance-segmentation transforms stop the scale jitter at 1.0, so the fixed-size crop never
    cuts a polygon; detection (and the segmentation view's shared records) keep the paper's 0.3-2.0."""
    from zoo.data.coco import COCODetectionDataModule

    dm = COCODetectionDataModule(str(scenes.scene_dir), "train", "val", "test", 64, max_scale=2.0,
                                 tasks=["detection", "instance_segmentation"])
    dm.setup("fit")
    sets = dm.task_sets["train"]
    assert sets["detection"].max_scale == 2.0 and sets["instance_segmentation"].max_scale == 1.0
    assert sets["instance_segmentation"].records is sets["detection"].records  # read once
    assert sets["instance_segmentation"].points == ("polygon",) and sets["detection"].points == ()


def test_detected_prompts_are_the_top_scoring_detections_and_half_the_votes_keep_a_pixel(monkeypatch):
    """The official evaluation reorders the saved detections by score and prompts with the first 10; its mask
    ensemble keeps a pixel that exactly half of the samples cover (greater_equal)."""
    from zoo.models.pix2seq.multitask import top_detections

    boxes = torch.arange(2 * 4 * 4, dtype=torch.float).view(2, 4, 4)
    labels = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]])
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.9], [0.3, 0.2, 0.8, 0.1]])
    b, lab, sc = top_detections(boxes, labels, scores, 2)
    assert lab.tolist() == [[2, 4], [7, 5]] and torch.allclose(sc, torch.tensor([[0.9, 0.9], [0.8, 0.3]]))
    assert top_detections(boxes, labels, scores, 6)[1][:, 4:].eq(0).all()  # fewer than asked: empty slots
    assert torch.equal(b[0, 1], boxes[0, 3]) and torch.equal(b[1, 0], boxes[1, 2])

    model = Pix2SeqMultiTask(**TINY)
    half = torch.zeros(4, 3, 3)
    half[:2, 0, 0] = 1  # pixel (0, 0) covered by 2 of 4 samples
    votes = half.mean(0)
    for inclusive, kept in ((True, True), (False, False)):
        model.hparams.ensemble_inclusive = inclusive
        rule = votes >= 0.5 if model.hparams.ensemble_inclusive else votes > 0.5
        assert bool(rule[0, 0]) is kept
    with pytest.raises(ValueError, match="detected_prompts"):
        Pix2SeqMultiTask(**{**TINY, "detected_prompts": "best"})
