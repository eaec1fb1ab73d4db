"""The LightningCLI behind `zoo fit|validate|test|predict` and `zoo reproduce`."""
from __future__ import annotations

import difflib
import importlib
import inspect
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import yaml
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities import rank_zero_info

import zoo.models  # noqa: F401  (registers every paper, so `--model=ForwardForward` resolves)
from zoo._module import ZooModule


def _import(class_path: str) -> Any:
    module, _, name = class_path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def run_name(config_files: list[str], model_class_path: str | None) -> str:
    """The run folder's name under ./runs: the first `--config` (the recipe; overlays stack after it) as its path
    below a `configs` folder (`forward_forward/fmnist`) or its stem, else the model's registry key."""
    if config_files:
        parts = Path(config_files[0]).with_suffix("").parts
        if "configs" in parts[:-1]:
            return "/".join(parts[len(parts) - parts[::-1].index("configs"):])
        return parts[-1]
    if model_class_path:
        cls = _import(model_class_path)
        return getattr(cls, "zoo_key", "") or cls.__name__
    return "default"


class EpochLine(Callback):
    """One line per training epoch (epoch, step, train losses, val metrics, seconds): what a log file gets instead
    of the progress bar, whose redraws add thousands of lines when stdout is not a terminal."""

    def __init__(self) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        metrics = trainer.callback_metrics
        keys = [k for k in sorted(metrics) if not k.endswith("_step") and metrics[k].numel() == 1
                and ((k.startswith("train") and "loss" in k) or k.startswith("val"))]
        total = f"/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
        cells = [f"epoch {trainer.current_epoch + 1}{total}", f"step {trainer.global_step}"]
        cells += [f"{k} {float(metrics[k]):.4g}" for k in keys]
        cells.append(f"{time.perf_counter() - self._start:.1f} s")
        print("  ".join(cells), flush=True)


def _flat_keys(node: Any, prefix: str = "") -> list[str]:
    """Dotted keys of a YAML mapping, with jsonargparse's `init_args` levels kept as written."""
    if not isinstance(node, dict):
        return []
    out = []
    for k, v in node.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        out += [key] + _flat_keys(v, key)
    return out


def _config_files(argv: list[str]) -> list[str]:
    files, it = [], iter(argv)
    for a in it:
        if a in ("-c", "--config"):
            files.append(next(it, ""))
        elif a.startswith("--config="):
            files.append(a.split("=", 1)[1])
    return [f for f in files if f]


def _known_keys(parser: Any, argv: list[str], files: list[str]) -> list[str]:
    """Every option the (sub)command accepts, plus `model.init_args.X` / `data.init_args.X` for the classes the
    config files name, so a misspelt key can be matched against them."""
    sub = parser._subcommands_action
    if sub is not None and argv and argv[0] in sub._name_parser_map:
        parser = sub._name_parser_map[argv[0]]
    keys = [a.dest for a in parser._actions if a.dest and a.dest != "help"]
    for f in files:
        try:
            doc = yaml.safe_load(Path(f).read_text()) or {}
        except (OSError, yaml.YAMLError):
            continue
        for group in ("model", "data"):
            node = doc.get(group)
            if isinstance(node, dict) and isinstance(node.get("class_path"), str):
                try:
                    params = inspect.signature(_import(node["class_path"])).parameters
                except (ImportError, AttributeError, ValueError):
                    continue
                keys += [f"{group}.init_args.{p}" for p in params if p not in ("self", "args", "kwargs")]
    return keys


def _closest(key: str, known: list[str]) -> str | None:
    """`key` with its first unknown component replaced by the closest valid one at that level."""
    parts = key.split(".")
    for i, part in enumerate(parts):
        head = ".".join(parts[:i])
        level = {k.split(".")[i] for k in known if len(k.split(".")) > i and (i == 0 or k.startswith(head + "."))}
        if part in level:
            continue
        close = difflib.get_close_matches(part, sorted(level), n=1, cutoff=0.6)
        return ".".join([*parts[:i], close[0], *parts[i + 1:]]) if close else None
    return None


def _in_file(path: str, key: str) -> bool:
    try:
        doc = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError):
        return False
    flat = set(_flat_keys(doc))
    return key in flat or key.replace(".init_args.", ".") in flat


_UNKNOWN = (r"Subcommand '\w+' does not accept option '(?P<k>[^']+)'",
            r"Group '(?P<g>[^']+)' does not accept option '(?P<k>[^']+)'",
            r"Parser key \"(?P<c>\w+)\":.*?Option '(?P<k>[^']+)' is not accepted",
            r"Option '(?P<k>[^']+)' is not accepted",
            r"unrecognized arguments: --(?P<k>[\w.]+)")


def explain_parse_error(message: str, argv: list[str], parser: Any) -> str:
    """jsonargparse's error as one line: the unknown key, the config file it is in, and the closest valid key;
    other errors without the Union bookkeeping (`Subtypes`, `Given value`) around the real reason."""
    for pattern in _UNKNOWN:
        if m := re.search(pattern, message, flags=re.S):
            g = m.groupdict()
            key = (f"{g['g']}." if g.get("g") else f"{g['c']}.init_args." if g.get("c") else "") + g["k"]
            break
    else:
        lines = [ln.strip().lstrip("- ") for ln in message.splitlines()]
        noise = ("Does not validate against any of the Union subtypes", "Subtypes:", "Errors:",
                 "Expected a <class 'NoneType'>", "Given value")
        return " ".join(ln for ln in lines if ln and not ln.startswith(noise))
    files = _config_files(argv)
    close = _closest(key, _known_keys(parser, argv, files))
    where = next((f for f in reversed(files) if _in_file(f, key)), None)
    if where:
        short = key.replace(".init_args.", ".")
        hint = f" (did you mean {close.replace('.init_args.', '.')!r}?)" if close else ""
        return f"{where}: unknown key {short!r}{hint}"
    return f"unknown option --{key}" + (f" (did you mean --{close}?)" if close else "")


class ZooArgumentParser(LightningArgumentParser):
    """LightningArgumentParser whose errors are one line on stderr that names the bad key (and its config file),
    instead of the 50-line usage text; the exit status stays argparse's 2."""

    zoo_argv: list[str] = []

    def error(self, message: str, ex: Exception | None = None):
        if not self.exit_on_error:
            return super().error(message, ex)
        sub, argv = self._subcommands_action, self.zoo_argv
        prog = self.prog.replace(" [options]", "")  # a subcommand's parser: "zoo [options] fit"
        if sub is not None and argv and argv[0] in sub._name_parser_map:
            prog = f"{prog} {argv[0]}"
        sys.stderr.write(f"{prog}: {explain_parse_error(message, argv, self)}\n")
        sys.exit(2)


class ZooCLI(LightningCLI):
    """LightningCLI over every zoo model and DataModule: `--model=ForwardForward`, `--data=IDXDataModule`,
    `--config` files stacked in order, `--print_config`, `--model.help ForwardForward`.

    Without `--trainer.default_root_dir`, a run writes to ./runs/<recipe> (`runs/forward_forward/fmnist` for
    configs/forward_forward/fmnist.yaml), so each recipe has its own checkpoints and `--ckpt_path last` resumes
    that recipe. When stdout is not a terminal and the progress bar was not set either way, `EpochLine` replaces it.
    """

    def __init__(self, args=None, run: bool = True, **kwargs):
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("parser_kwargs", {"prog": "zoo"})
        kwargs.setdefault("parser_class", ZooArgumentParser)
        self._argv = [str(a) for a in (sys.argv[1:] if args is None else args)]
        self._epoch_lines = False
        super().__init__(ZooModule, L.LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
                         args=args, run=run, **kwargs)

    def init_parser(self, **kwargs: Any) -> LightningArgumentParser:
        parser = super().init_parser(**kwargs)
        parser.zoo_argv = self._argv
        return parser

    def add_arguments_to_parser(self, parser) -> None:
        import zoo.data  # noqa: F401  (so `--data=IDXDataModule` resolves)

    def before_instantiate_classes(self) -> None:
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        trainer = cfg.trainer
        if trainer.get("default_root_dir") is None:
            model = cfg.get("model")
            name = run_name([str(c) for c in cfg.get("config") or []], getattr(model, "class_path", None))
            trainer.default_root_dir = os.path.join("runs", *name.split("/"))
            rank_zero_info(f"Run folder: {trainer.default_root_dir} (set --trainer.default_root_dir to change it)")
        callbacks = trainer.get("callbacks") or []
        chose_a_bar = any("ProgressBar" in str(getattr(c, "class_path", c)) for c in callbacks)
        if trainer.get("enable_progress_bar") is None and not chose_a_bar and not sys.stdout.isatty():
            trainer.enable_progress_bar = False
            self._epoch_lines = True

    def after_instantiate_classes(self) -> None:
        # Checkpoints go to <default_root_dir>/checkpoints, not into the logger's new version folder, so a
        # rerun of the same command with `--ckpt_path last` finds the checkpoint the killed run left.
        for cb in self.trainer.checkpoint_callbacks:
            if isinstance(cb, ModelCheckpoint) and cb.dirpath is None:
                cb.dirpath = os.path.join(self.trainer.default_root_dir, "checkpoints")
        if self._epoch_lines:
            self.trainer.callbacks.append(EpochLine())


def check_resume(module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
    """Refuse, in one line, a Lightning checkpoint written by another model class or shape than `module`, before
    Lightning's strict load turns it into a size-mismatch traceback. Differing hyper-parameters alone (a new
    learning rate) are allowed; the message lists them to explain a refusal."""
    from zoo._errors import CheckpointMismatchError

    trainer = module._trainer
    # Sharding strategies (FSDP, DeepSpeed) restore into wrapped, sharded parameters, and their sharded checkpoints
    # hold no "state_dict": there only the model class is compared.
    sharded = trainer is not None and trainer.strategy.restore_checkpoint_after_setup
    bad: list[str] = []
    if "state_dict" in checkpoint and not sharded:
        theirs = {k: tuple(v.shape) for k, v in checkpoint["state_dict"].items()}
        ours = {k: tuple(v.shape) for k, v in module.state_dict().items()}
        sized = set(getattr(module, "data_shaped_keys", ()))
        bad = sorted(k for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k) and k not in sized)
    hp = checkpoint.get("hyper_parameters") or {}
    their_class = str(hp.get("_class_path") or "")
    try:
        other_class = bool(their_class) and _import(their_class) is not type(module)
    except (ImportError, AttributeError, ValueError):
        other_class = True
    if not bad and not other_class:
        return
    mine = {k: v for k, v in module.hparams.items() if not str(k).startswith("_")}
    given = {k: v for k, v in hp.items() if not str(k).startswith("_")}
    differ = [k for k in dict.fromkeys([*given, *mine]) if given.get(k) != mine.get(k)]

    def describe(name: str, args: dict) -> str:  # the differing init args only, at most six
        shown = [f"{k}={args[k]!r}" for k in differ if k in args]
        return f"{name}({', '.join(shown[:6])}{', ...' if len(shown) > 6 else ''})"

    path = (trainer.ckpt_path if trainer is not None else None) or "the checkpoint"
    their_name = their_class.rpartition(".")[2] or "another model"
    text = (f"cannot resume from {path}: it holds {describe(their_name, given)}, this run builds "
            f"{describe(type(module).__name__, mine)}")
    if bad:
        k = bad[0]
        text += (f"; {len(bad)} tensor(s) differ, e.g. {k} {list(theirs[k]) if k in theirs else 'absent'} there, "
                 f"{list(ours[k]) if k in ours else 'absent'} here")
    raise CheckpointMismatchError(text + ". Resume with the same model, or give this run its own "
                                  "--trainer.default_root_dir.")
