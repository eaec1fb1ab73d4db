"""Lightning overhead: training steps per second through `zoo fit` (ZooCLI, the same code path) against a plain
PyTorch loop over the same model, data loader, optimiser, learning-rate schedule and gradient clipping, in the same
process.

    python benchmarks/overhead.py [--recipe configs/forward_forward/fmnist.yaml] [--steps 150] [--repeats 3]
    python benchmarks/overhead.py --recipe configs/moe_lm/brown-moe32.yaml --steps 20 --warmup 3
    python benchmarks/overhead.py --recipe configs/fwl/brown-fwl.yaml --steps 10 --warmup 2
    python benchmarks/overhead.py --recipe configs/speech_rnn/synth-ctc-3l128.yaml --steps 30 --warmup 3 \
        --data.init_args.max_utterances=300
    python benchmarks/overhead.py --recipe configs/simclr/fmnist.yaml --steps 20 --warmup 3
    python benchmarks/overhead.py --recipe configs/pix2seq/scenes.yaml --steps 20 --warmup 3
    python benchmarks/overhead.py --recipe configs/bit_diffusion/fmnist.yaml --steps 40 --warmup 5

Prints steps/s for each path and the ratio (target: the Lightning path at least 0.9x the plain loop). Recipes of
the models in PLAIN_LOSS are supported; further `--key=value` arguments override the recipe for both paths. Uses the
recipe's data (Fashion-MNIST needs its IDX files, the language models the Brown corpus, the speech models the
synthetic corpus; `--recipe configs/forward_forward/digits.yaml` runs anywhere).
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import lightning as L
import torch
import torch.nn.functional as F

from _plain import plain_parts
from zoo._lightning_cli import ZooCLI
from zoo._paths import resolve_recipe


class _Clock(L.Callback):
    def __init__(self, warmup: int):
        self.warmup, self.start, self.end, self.steps = warmup, None, None, 0

    def on_train_batch_start(self, trainer, *args):
        if trainer.global_step == self.warmup:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, *args):
        self.end, self.steps = time.perf_counter(), trainer.global_step - self.warmup


def _cli(recipe: str, steps: int, lean: bool, overrides: tuple[str, ...] = ()) -> ZooCLI:
    args = ["--config", str(resolve_recipe(recipe)), *overrides, f"--trainer.max_steps={steps}",
            "--trainer.max_epochs=-1", "--trainer.limit_val_batches=0", "--trainer.num_sanity_val_steps=0",
            "--trainer.enable_checkpointing=false", "--trainer.enable_model_summary=false", "--trainer.callbacks=[]"]
    if lean:
        args += ["--trainer.logger=false", "--trainer.enable_progress_bar=false"]
    else:
        args += ["--trainer.default_root_dir=/tmp/zoo-bench-overhead"]
    return ZooCLI(args=args, run=False, save_config_callback=None)


def lightning_steps_per_s(recipe: str, steps: int, warmup: int, lean: bool,
                          overrides: tuple[str, ...] = ()) -> float:
    cli = _cli(recipe, steps + warmup, lean, overrides)
    clock = _Clock(warmup)
    cli.trainer.callbacks.append(clock)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return clock.steps / (clock.end - clock.start)


def _moe_lm_loss():
    state: list = [None]

    def loss(model, batch):
        x, y = batch
        out = model.net(x, state[0])
        state[0] = tuple(tuple(t.detach() for t in s) for s in out.state)  # carried to the next window
        return F.cross_entropy(out.logits.flatten(0, 1), y.flatten()) + out.aux_loss
    return loss


def _speech_loss():
    from zoo.losses import transducer_loss
    from zoo.models.speech_rnn.model import stack_frames

    def loss(model, batch):
        x, n, y, yn = batch
        x, n = stack_frames(x, n, model.hparams.stack)
        if model.hparams.output == "transducer":
            return transducer_loss(model.net(x, n, y), y, n, yn)
        lp = model.net(x, n)
        return F.ctc_loss(lp.transpose(0, 1), y, n, yn, reduction="sum", zero_infinity=True) / len(n)
    return loss


def _imputer_ctc_loss():
    def loss(model, batch):
        x, n, y, yn = batch
        lp, n = model.net(x, n)
        return F.ctc_loss(lp.transpose(0, 1), y, n, yn, reduction="none", zero_infinity=True).mean()
    return loss


def _parser_loss():
    from zoo.models.seq2seq_parser.model import sequence_loss

    def loss(model, batch):
        src, n, tgt = batch[:3]
        return sequence_loss(model.net(src, n, torch.cat([torch.ones_like(tgt[:, :1]), tgt[:, :-1]], 1)), tgt)
    return loss


def _simclr_loss():
    from zoo.losses import nt_xent

    def loss(model, batch):
        (view_a, view_b), y = batch
        h, z = model.net(torch.cat([view_a, view_b]))
        n = len(y)
        return (nt_xent(z[:n], z[n:], model.hparams.temperature)
                + F.cross_entropy(model.probe(h.detach()), y.repeat(2)))
    return loss


def _bit_diffusion_loss():
    def loss(model, batch):
        model.on_train_batch_end(None, batch, 0)  # the EMA update zoo fit makes after every step (a step earlier here)
        return model.model.loss(model.levels(batch[0]))
    return loss


#: registry key -> a factory of the plain loop's loss(model, batch): the training objective written out directly
PLAIN_LOSS: dict[str, Callable] = {
    "forward_forward": lambda: lambda model, batch: model.local_losses(*batch)[0],
    "moe_lm": _moe_lm_loss,
    "fwl_lm": lambda: lambda model, batch: F.cross_entropy(model(batch[0]).flatten(0, 1), batch[1].flatten()),
    "speech_rnn": _speech_loss,
    "imputer": _imputer_ctc_loss,   # the expert's recipe (loss: ctc)
    "seq2seq_parser": _parser_loss,
    "simclr": _simclr_loss,
    "pix2seq": lambda: lambda model, batch: model.loss(batch[0], batch[1], train=True),
    "bit_diffusion": _bit_diffusion_loss,
}


def plain_steps_per_s(recipe: str, steps: int, warmup: int, overrides: tuple[str, ...] = ()) -> float:
    cli = _cli(recipe, steps + warmup, True, overrides)  # only to build the same model and DataModule from the recipe
    key = type(cli.model).zoo_key
    if key not in PLAIN_LOSS:
        raise SystemExit(f"no plain loop for {key!r} recipes: one of {sorted(PLAIN_LOSS)}")
    loss_fn = PLAIN_LOSS[key]()
    model, dm, opt, sched = plain_parts(cli, with_scheduler=True)
    clip = cli.trainer.gradient_clip_val or model.hparams.get("clip")  # the parser clips in its module
    done, start = 0, None
    while done < steps + warmup:
        for batch in dm.train_dataloader():
            if done == warmup:
                start = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            loss_fn(model, batch).backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            opt.step()
            if sched is not None:
                sched.step()
            done += 1
            if done == steps + warmup:
                break
    return steps / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", default="configs/forward_forward/fmnist.yaml")
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    a, overrides = p.parse_known_args()
    overrides = tuple(overrides)
    torch.use_deterministic_algorithms(True)  # what the recipes' `deterministic: true` sets for the Lightning path
    plain, lean, full = [], [], []
    for _ in range(a.repeats):  # interleaved, so drift in machine load hits every path alike
        plain.append(plain_steps_per_s(a.recipe, a.steps, a.warmup, overrides))
        lean.append(lightning_steps_per_s(a.recipe, a.steps, a.warmup, True, overrides))
        full.append(lightning_steps_per_s(a.recipe, a.steps, a.warmup, False, overrides))
    m_plain, m_lean, m_full = (statistics.median(v) for v in (plain, lean, full))
    print(f"recipe {a.recipe} {' '.join(overrides)}, {a.steps} timed steps after {a.warmup} warm-up, median of "
          f"{a.repeats}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"plain PyTorch loop                       {m_plain:8.2f} steps/s")
    print(f"zoo fit, no logger/progress bar          {m_lean:8.2f} steps/s   ratio {m_lean / m_plain:.3f}")
    print(f"zoo fit, recipe defaults (bar, CSV logs) {m_full:8.2f} steps/s   ratio {m_full / m_plain:.3f}")


if __name__ == "__main__":
    main()
