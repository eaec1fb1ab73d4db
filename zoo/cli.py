"""The `zoo` command.

`zoo fit|validate|test|predict` are LightningCLI subcommands (configs, --print_config, --model.help);
`zoo list`, `zoo info` read the catalogue without importing torch or lightning; `zoo download`,
`zoo reproduce`, `zoo convert` and `zoo publish` manage weights.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

LIGHTNING = ("fit", "validate", "test", "predict")
USAGE = """usage: zoo <command> [options]

Lightning (LightningCLI; `zoo fit --help` for every option):
  fit        train:  zoo fit --config configs/forward_forward/digits.yaml [--config configs/strategies/ddp.yaml]
  validate   run the validation loop
  test       run the test loop
  predict    run prediction

Catalogue and weights:
  list       catalogue names, with filters:        zoo list 'forward-forward-*' --dataset fashion-mnist
  info       one entry: metrics, paper, recipe, hub  zoo info forward-forward-digits
  claims     the papers' claims, held or not here    zoo claims 'capsnet-*'   (or an arXiv id)
  download   fetch and verify an entry's weights     zoo download forward-forward-fmnist
  reproduce  train the recipe, test, compare, save a release   zoo reproduce forward-forward-digits
  publish    upload a release in one Hub commit      zoo publish NAME --repo-id ORG/REPO
  convert    official weights -> a zoo release       zoo convert pix2seq-coco [--checkpoint DIR]
             the whole zoo: zoo reproduce --all --only-missing; zoo publish --all --org ORG

`zoo <command> --help` explains each one. fit/validate/test/predict, reproduce and convert let glibc's malloc
keep freed blocks up to 1 GiB for reuse (large CPU temporaries are otherwise faulted in afresh every step;
results are unchanged); ZOO_SYSTEM_MALLOC=1 turns that off.
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="zoo", usage=USAGE, add_help=False)
    sub = p.add_subparsers(dest="command", prog="zoo")  # sub-commands say "usage: zoo list ...", not the overview
    ls = sub.add_parser("list", help="list catalogue names", description="List catalogue entries (offline).")
    ls.add_argument("pattern", nargs="?", default="*", help="glob over names, e.g. 'forward-forward-*'")
    ls.add_argument("--task")
    ls.add_argument("--dataset")
    ls.add_argument("--tag")
    ls.add_argument("--names", action="store_true", help="names only, one per line")
    ls.add_argument("--full", action="store_true", help="every measured metric and the model key (wide)")
    inf = sub.add_parser("info", description="Show one catalogue entry.")
    inf.add_argument("name")
    inf.add_argument("--json", action="store_true", help="print JSON instead of YAML")
    cl = sub.add_parser("claims", description=(
        "The claims ledger: each paper's testable claims and whether our measured metrics bear them out (holds, "
        "fails, not testable here). Verdicts are computed from the catalogue's measured metrics."))
    cl.add_argument("what", nargs="?", default="*",
                    help="an entry name or glob ('capsnet-*') for the claims of its papers, or an arXiv id")
    dl = sub.add_parser("download", description="Download (or find in the cache) an entry's weights and verify them.")
    dl.add_argument("name")
    dl.add_argument("--revision", help="a 40-hex commit; default: the catalogue's pin")
    rp = sub.add_parser("reproduce", description=(
        "Train an entry's recipe, test it, print measured vs catalogue vs paper, and save the release in "
        "$ZOO_HOME/releases/NAME. Extra options go to LightningCLI as --key=value, e.g. --trainer.max_epochs=1 "
        "--trainer.accelerator=gpu --config configs/strategies/ddp.yaml; --ckpt_path=FILE resumes one entry's "
        "interrupted run from a checkpoint under $ZOO_HOME/runs/NAME/ (recorded as resumed_from). "
        "With --all: every entry matching PATTERN "
        "(default all), baselines and required entries first, going on past a failure, then one summary table; "
        "it first prints the plan and the expected time from the catalogue's recorded times, and never asks. "
        "Stopped and run again with the same options, it resumes after the last finished entry. Exit status: "
        "0 all within tolerance, 3 a metric outside it, 1 an entry failed, 130 interrupted."))
    rp.add_argument("name", nargs="?", metavar="NAME|PATTERN",
                    help="catalogue name; with --all a glob over names such as 'forward-forward-*' (default: all)")
    rp.add_argument("--all", action="store_true", help="reproduce every entry matching PATTERN, in dependency order")
    rp.add_argument("--only-missing", action="store_true",
                    help="with --all: skip entries published on the Hub or whose local release verifies and whose "
                         "metrics are within the catalogue's tolerance")
    rp.add_argument("--dry-run", action="store_true",
                    help="with --all: print the plan and the expected time, train nothing")
    rp.add_argument("--update-catalog", action="store_true",
                    help="write the measured metrics, parameter count and provenance into the catalogue")
    rp.add_argument("--no-baseline", action="store_true",
                    help="skip the backprop baseline the entry is compared with (with --all: baselines that "
                         "PATTERN does not match are not added)")
    cv = sub.add_parser("convert", description=(
        "Turn an entry's official checkpoint (its catalogue `source`: a TensorFlow checkpoint, or a PyTorch "
        "`torch.save` file) into a zoo release in $ZOO_HOME/releases/NAME, which `zoo.load(NAME)` then reads and "
        "`zoo publish` uploads. Every variable of the checkpoint is mapped onto the model or skipped by name "
        "(optimizer state, step counters, parts the official model never uses), and every shape checked; anything "
        "else stops the conversion with the names involved. The sha256 of each file read goes into the release's "
        "provenance.json. TensorFlow checkpoints need `pip install 'hinton-zoo[convert]'`; PyTorch files are read "
        "only through torch's weights_only loader, never unpickled otherwise."))
    cv.add_argument("name", help="catalogue name with a `source`, e.g. pix2seq-coco (`zoo info NAME` shows it)")
    cv.add_argument("--checkpoint", help="the official checkpoint already on disk: its folder, prefix or .index "
                                         "file, or the .pth file of a PyTorch source (default: download a "
                                         "TensorFlow source into $ZOO_HOME/sources/NAME)")
    cv.add_argument("--tokenizer", help="the official tokenizer model already on disk, for sources that name one "
                                        "(Pix2seq v2's c4_en_32k_spm.model; default: download it)")
    cv.add_argument("--output", help="release folder to write (default: $ZOO_HOME/releases/NAME)")
    cv.add_argument("--update-catalog", action="store_true", help="write the parameter count into the catalogue")
    pb = sub.add_parser("publish", description=(
        "Upload a release in one Hub commit and pin the commit id and the files' sha256 in the catalogue. With "
        "--all: every local release in $ZOO_HOME/releases matching PATTERN that the catalogue does not pin yet, "
        "or whose files changed, goes to ORG/NAME, one commit per repo; each pin is written only after its commit "
        "succeeded, so an interrupted run leaves the catalogue true to the Hub, and running it again finishes the "
        "rest. Needs a token with write access (huggingface-cli login, HF_TOKEN or --token)."))
    pb.add_argument("name", nargs="?", metavar="NAME|PATTERN",
                    help="catalogue name (its release in $ZOO_HOME/releases) or a release folder; with --all a glob "
                         "over names (default: all)")
    pb.add_argument("--repo-id", help="ORG/REPO to publish one release to")
    pb.add_argument("--all", action="store_true", help="publish every new or changed local release to ORG/NAME")
    pb.add_argument("--org", help="with --all: the Hub organisation (or user) that gets one repo per entry")
    pb.add_argument("--dry-run", action="store_true", help="with --all: list what would be uploaded, with sizes")
    pb.add_argument("--token")
    pb.add_argument("--endpoint", help="Hub endpoint (default: huggingface.co or HF_ENDPOINT)")
    return p


def _weights(e) -> str:
    """Where `zoo.load(NAME)` would get the weights: a pinned Hub commit, a local release, or nowhere yet."""
    from zoo._paths import releases_dir

    if e.hub:
        return f"hub@{e.hub.revision[:7]}"
    return "local" if (releases_dir() / e.name / "model.safetensors").is_file() else "–"


def _list(args) -> int:
    from zoo import _catalog

    names = _catalog.names(args.pattern, task=args.task, dataset=args.dataset, tag=args.tag)
    if args.names:
        print("\n".join(names))
        return 0
    if not names:
        print(f"no entries match {args.pattern!r}", file=sys.stderr)
        return 1
    entries = [_catalog.get(n) for n in names]
    if args.full:
        rows = [("name", "model", "dataset", "metrics (measured)", "weights")]
        rows += [(e.name, e.model, e.dataset, ", ".join(f"{k}={v:.4f}" for k, v in e.metrics.items()) or "–",
                  _weights(e)) for e in entries]
    else:
        rows = [("name", "dataset", "weights", "headline metric")]  # the headline last: its width varies most
        rows += [(e.name, e.dataset, _weights(e), e.headline() or "–") for e in entries]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return 0


def _claims(args) -> int:
    from zoo import _catalog
    from zoo._claims import summary, text_table, verdict

    ledger, entries = _catalog.load_claims(), _catalog.load_catalog()
    if args.what in ledger:
        papers = [args.what]
    else:
        names = _catalog.names(args.what)
        if not names:
            _catalog.get(args.what)  # raises with close-match suggestions
        papers = list(dict.fromkeys(a for n in names for a in (entries[n].paper.arxiv, *entries[n].paper.also)))
    titles = {e.paper.arxiv: e.paper.title for e in entries.values()}
    for arxiv in (p for p in papers if p in ledger):
        verdicts = [verdict(c, lambda n: entries[n].metrics) for c in ledger[arxiv]]
        title = f"{titles[arxiv]} (arXiv {arxiv})" if arxiv in titles else f"arXiv {arxiv}"
        print(f"{title}: {summary(verdicts)}\n{text_table(verdicts)}\n")
    return 0


def _info(args) -> int:
    from zoo import _catalog

    d = {args.name: _catalog.get(args.name).to_dict()}
    print(json.dumps(d, indent=2) if args.json else _catalog.dump_yaml(d), end="")
    return 0


def _usage_error(command: str, message: str) -> int:
    print(f"zoo {command}: {message}. See `zoo {command} --help`.", file=sys.stderr)
    return 2


def _zoo_error(err: BaseException) -> BaseException | None:
    """The zoo error behind `err`, if any: jsonargparse wraps what a model's __init__ raised (e.g. weights that do
    not exist) in its own ValueError, and the user should see the zoo error's one line, not both tracebacks."""
    from zoo import _errors

    known = (_errors.CheckpointNotAvailable, _errors.ChecksumError,
             _errors.WeightsMismatchError, _errors.UnknownCheckpointError, _errors.CatalogError,
             _errors.ConversionError)
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, known):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def main(argv: list[str] | None = None) -> int:
    from_shell = argv is None
    argv = sys.argv[1:] if from_shell else list(argv)
    if from_shell and argv and argv[0] in LIGHTNING + ("reproduce", "convert"):  # the process is ours
        from zoo._runtime import keep_freed_memory

        keep_freed_memory()
    if argv and argv[0] in LIGHTNING:
        from zoo._lightning_cli import ZooCLI

        try:
            ZooCLI(args=None if from_shell else argv)
        except Exception as err:
            cause = _zoo_error(err)
            if cause is None:
                raise
            print(f"zoo {argv[0]}: {cause}", file=sys.stderr)
            return 2
        return 0
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if args.command is None:
        parser.error(f"unknown command {argv[0]!r}")
    if extra and args.command != "reproduce":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    from zoo._errors import (CatalogError, CheckpointNotAvailable, ChecksumError, ConversionError,
                             UnknownCheckpointError)

    try:
        if args.command in ("list", "info", "claims"):
            try:
                return {"list": _list, "info": _info, "claims": _claims}[args.command](args)
            except BrokenPipeError:  # `zoo list | head`: the reader left; end quietly as Unix tools do
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                return 0
        if args.command == "download":
            from zoo._hub import resolve

            src = resolve(args.name, revision=args.revision)
            print(f"{args.name}: verified {len(src.state)} tensors from {src.origin}")
            return 0
        if args.command == "reproduce":
            if args.all:
                from zoo._release_all import reproduce_all

                return reproduce_all(args.name or "*", extra, only_missing=args.only_missing,
                                     update_catalog=args.update_catalog, baselines=not args.no_baseline,
                                     dry_run=args.dry_run)
            if args.name is None or args.only_missing or args.dry_run:
                return _usage_error("reproduce", "give an entry name, or --all [PATTERN] (--only-missing and "
                                                 "--dry-run go with --all)")
            from zoo._reproduce import reproduce

            out = reproduce(args.name, extra, update_catalog=args.update_catalog, with_baseline=not args.no_baseline)
            return 0 if out.get("ok", True) else 3
        if args.command == "convert":
            from zoo._convert import convert

            folder = convert(args.name, args.checkpoint, args.output, update_catalog=args.update_catalog,
                             tokenizer=args.tokenizer)
            print(f"{args.name}: converted into {folder}; zoo.load({args.name!r}) now reads it")
            return 0
        if args.command == "publish":
            if args.all:
                if not args.org or args.repo_id:
                    return _usage_error("publish", "--all needs --org ORG (each entry goes to ORG/NAME), not --repo-id")
                from zoo._release_all import publish_all

                return publish_all(args.org, args.name or "*", token=args.token, endpoint=args.endpoint,
                                   dry_run=args.dry_run)
            if args.name is None or not args.repo_id or args.org or args.dry_run:
                return _usage_error("publish", "give NAME --repo-id ORG/REPO, or --all --org ORG [PATTERN] [--dry-run]")
            from zoo._hub import publish

            res = publish(args.name, args.repo_id, token=args.token, endpoint=args.endpoint)
            print(json.dumps(res, indent=2))
            return 0
    except (UnknownCheckpointError, CheckpointNotAvailable, ChecksumError, CatalogError, ConversionError) as err:
        print(f"zoo {args.command}: {err}", file=sys.stderr)
        return 2
    return 1


if __name__ == "__main__":
    sys.exit(main())
