"""Forward-Forward, the rest of the paper: training throughput of the unsupervised and local-receptive-field
entries and their backprop twins, and the two routes of zoo.nn.local.LocallyConnected2d, in one process.

    python benchmarks/forward_forward.py [--steps 100] [--repeats 3] [--reference /tmp/ref-ff]

0. With `--reference` (a checkout of loeweX/Forward-Forward, imported at run time; nothing of it is copied): the
   supervised training step of the fmnist recipe (784 -> 3 x 1000, batch 100, peer normalisation 0.03, SGD with
   momentum 0.9 on both parameter groups) against loeweX's FF_model, same sizes and Fashion-MNIST batches, in ms
   per step, interleaved. Each step on both sides: a no-grad pass of the B neutral-label images through the 3
   layers and the linear read-out of the last two layers' normalised activities (cross-entropy); a pass of the
   2B positive + negative images (one matmul per layer over the concatenated batch) with each layer's goodness
   loss and peer normalisation; one backward (weight gradients of every layer, 2B rows; no gradient crosses a
   layer); the SGD step. loeweX draws the wrong label uniformly in its Dataset and takes peer normalisation as
   a loss through autograd; ours draws it from the read-out's softmax inside the step (the recipe's `hard`
   negatives) and adds the peer term to the gradient directly. Building loeweX's pos/neg/neutral images (done
   by its DataLoader workers) is outside its timed step; ours overlays the labels inside the step. Its
   `src.utils` imports hydra, omegaconf and torchvision at module level for its training script; stubs stand
   in for hydra and omegaconf while the model module is imported, and are removed afterwards.
1. The locally connected layer, forward and backward on a batch of 200 (an FF step's positive and negative
   halves) at the recipes' sizes: the dense route (filters scattered into the connection matrix, one matmul)
   against the textbook unfold + einsum route, and the ratio.
2. Training steps/s of each recipe's model in a plain PyTorch loop over its own DataModule (Fashion-MNIST
   needs its IDX files), the FF entries beside their same-shape backprop twins.
"""
from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import time
import types
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml

from _compare import Row, interleaved, print_rows
from _plain import plain_parts
from zoo._lightning_cli import ZooCLI
from zoo._paths import resolve_recipe
from zoo.nn.local import LocallyConnected2d

RECIPES = ["fmnist_unsupervised", "fmnist_unsupervised_backprop", "fmnist_localrf", "fmnist_localrf_backprop"]
LAYERS = {  # (in_channels, out_channels, image size, kernel): the FMNIST recipe's, the MNIST and CIFAR-10 configs'
    "fmnist_localrf 1->1 x 28x28, 11x11": (1, 1, 28, 11),
    "mnist_localrf 3->3 x 28x28, 11x11": (3, 3, 28, 11),
    "cifar10_localrf 3->3 x 32x32, 11x11": (3, 3, 32, 11),
}


def _timed(fn, steps: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    return steps / (time.perf_counter() - start)


def layer_rates(name: str, steps: int) -> tuple[float, float]:
    """Forward + backward iterations/s of one layer size by the dense and the unfold route."""
    ci, co, size, k = LAYERS[name]
    rates = []
    for impl in ("dense", "unfold"):
        torch.manual_seed(0)
        layer = LocallyConnected2d(ci, co, size, k, padding=k // 2, impl=impl)
        x = torch.rand(200, ci, size, size)

        def step():
            layer.zero_grad(set_to_none=True)
            layer(x).pow(2).mean().backward()

        rates.append(_timed(step, steps))
    return rates[0], rates[1]


def recipe_steps_per_s(recipe: str, steps: int) -> float:
    argv, sys.argv = sys.argv, ["zoo"]
    try:
        cli = ZooCLI(args=["--config", str(resolve_recipe(f"configs/forward_forward/{recipe}.yaml")),
                           "--trainer.logger=false"], run=False, save_config_callback=None)
    finally:
        sys.argv = argv
    model, dm, opt = plain_parts(cli)
    batches = iter(dm.train_dataloader())

    def step():
        x, y = next(batches)
        opt.zero_grad(set_to_none=True)
        loss = model.local_losses(x, y)[0] if hasattr(model, "local_losses") else model.loss(x, y)
        loss.backward()
        opt.step()

    return _timed(step, steps)


def loewex_model(checkout: Path):
    """loeweX's `src.ff_model` module and its config.yaml as attribute-style options, device cpu or cuda."""
    if not (checkout / "src" / "ff_model.py").is_file():
        raise SystemExit(f"{checkout}/src/ff_model.py not found: pass a loeweX/Forward-Forward checkout")
    import lightning  # noqa: F401  (imported before the stubs exist: it probes for a real omegaconf)

    stubs = {name: types.ModuleType(name) for name in ("hydra", "hydra.utils", "omegaconf")}
    stubs["hydra.utils"].get_original_cwd, stubs["omegaconf"].OmegaConf = Path.cwd, None
    saved = {name: sys.modules.get(name) for name in [*stubs, "src", "src.utils", "src.ff_model"]}
    sys.modules.update({k: v for k, v in stubs.items() if saved[k] is None})
    sys.path.insert(0, str(checkout))
    try:
        for name in ("src", "src.utils", "src.ff_model"):
            sys.modules.pop(name, None)
        module = importlib.import_module("src.ff_model")
    finally:
        sys.path.remove(str(checkout))
        for name, old in saved.items():  # the checkout's `src` and the stubs leave no trace
            if old is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = old

    def value(v):  # PyYAML reads 1e-3 as a string; OmegaConf, which loeweX uses, as a float
        try:
            return float(v) if isinstance(v, str) else v
        except ValueError:
            return v

    def ns(d):
        return types.SimpleNamespace(**{k: ns(v) if isinstance(v, dict) else value(v) for k, v in d.items()})

    return module, ns(yaml.safe_load((checkout / "config.yaml").read_text()))


def fmnist_batches(n_batches: int, batch_size: int, device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    from zoo.data import IDXDataModule

    dm = IDXDataModule("fashion-mnist", batch_size=batch_size, val_size=0)
    dm.prepare_data()
    dm.setup()
    x, y = dm.train_set.__getitems__(list(range(n_batches * batch_size)))
    return [(x[i:i + batch_size].to(device), y[i:i + batch_size].to(device))
            for i in range(0, n_batches * batch_size, batch_size)]


def reference_rows(checkout: Path, repeats: int = 5, steps: int = 10, device: str = "cpu",
                   variants: tuple[str, ...] = ()) -> list[Row]:
    """ms per supervised FF training step, ours against loeweX's (see the module docstring for what a step is).
    `variants` adds rows for our step under "compile" (torch.compile of the loss, compile time reported in
    the note) and "bf16" (CPU/CUDA autocast)."""
    import zoo

    module, opt = loewex_model(checkout)
    dev = torch.device(device)
    opt.device, B, C = device, opt.input.batch_size, 10
    batches = fmnist_batches(steps, B, dev)
    torch.manual_seed(0)
    theirs = module.FF_model(opt).to(dev)
    head = [*theirs.linear_classifier.parameters()]
    t_opt = torch.optim.SGD([  # its get_model_and_optimizer: two groups, momentum on both
        {"params": [q for q in theirs.parameters() if all(q is not h for h in head)], "lr": opt.training.learning_rate,
         "weight_decay": opt.training.weight_decay, "momentum": opt.training.momentum},
        {"params": head, "lr": opt.training.downstream_learning_rate,
         "weight_decay": opt.training.downstream_weight_decay, "momentum": opt.training.momentum}])
    g = torch.Generator(device=dev).manual_seed(0)
    feeds = []
    for x, y in batches:  # what its FF_MNIST Dataset hands the model: label in the first C pixels of row 0
        wrong = (y + torch.randint(1, C, y.shape, generator=g, device=dev)) % C
        imgs = {}
        for key, label in (("pos_images", F.one_hot(y, C).float()), ("neg_images", F.one_hot(wrong, C).float()),
                           ("neutral_sample", torch.full((len(y), C), 1 / C, device=dev))):
            imgs[key] = x.clone()
            imgs[key][:, 0, 0, :C] = label
        feeds.append((imgs, {"class_labels": y}))
    ours = zoo.create("forward_forward", in_features=784, hidden=[opt.model.hidden_dim] * opt.model.num_layers,
                      peer_norm=opt.model.peer_normalization, peer_momentum=opt.model.momentum).to(dev).train()
    o_opt = ours.configure_optimizers()

    def run_theirs():
        for inputs, labels in feeds:
            t_opt.zero_grad()
            theirs(inputs, labels)["Loss"].backward()
            t_opt.step()

    def our_run(loss_fn, autocast: bool = False):
        def run():
            for x, y in batches:
                o_opt.zero_grad(set_to_none=True)
                with torch.autocast(dev.type, torch.bfloat16, enabled=autocast):
                    loss = loss_fn(x, y)
                loss.backward()
                o_opt.step()
        return run

    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    fns = {"loeweX": run_theirs, "zoo": our_run(lambda x, y: ours.local_losses(x, y)[0])}
    notes = {}
    if "compile" in variants:
        compiled = torch.compile(lambda x, y: ours.local_losses(x, y)[0])
        start = time.perf_counter()
        our_run(compiled)()
        sync()
        notes["zoo + torch.compile"] = f"first call (compiling) {time.perf_counter() - start:.1f} s for {steps} steps"
        fns["zoo + torch.compile"] = our_run(compiled)
    sizes = [784] + [opt.model.hidden_dim] * opt.model.num_layers
    ws = [torch.randn(o, i, device=dev) for i, o in zip(sizes[:-1], sizes[1:])]
    acts = {(r, i): torch.randn(r, i, device=dev) for r in (B, 2 * B) for i in sizes}
    grads = {o: torch.randn(2 * B, o, device=dev) for o in sizes[1:]}
    flops = 2 * sum(w.numel() for w in ws) * (B + 2 * B + 2 * B)

    def run_matmuls():  # the floor at equal work: the step's matrix products alone, nothing else
        for _ in batches:
            for w in ws:
                o, i = w.shape
                acts[(B, i)] @ w.T, acts[(2 * B, i)] @ w.T, grads[o].T @ acts[(2 * B, i)]

    fns["matmuls only"] = run_matmuls
    params = [torch.zeros_like(q) for q in ours.parameters()]
    for q in params:
        q.grad = torch.randn_like(q)
    update = torch.optim.SGD(params, lr=1e-3, momentum=0.9, weight_decay=3e-4, fused=True)

    def run_matmuls_and_update():  # the products and the one memory-bound pass every step needs: the SGD update
        run_matmuls()
        for _ in batches:
            update.step()

    fns["matmuls + SGD update"] = run_matmuls_and_update
    if "bf16" in variants:
        fns["zoo + bf16 autocast"] = our_run(lambda x, y: ours.local_losses(x, y)[0], autocast=True)
    t = interleaved(fns, repeats, warmup=1, sync=sync)
    ms = {k: [1e3 * v / steps for v in vals] for k, vals in t.items()}
    notes["matmuls only"] = (f"the step's {flops / 1e9:.2f} GFLOP of matrix products (forward 3 x B + 3 x 2B rows, "
                             f"weight gradients 3 x 2B rows) alone run at "
                             f"{flops / statistics.median(ms['matmuls only']) / 1e6:.0f} GFLOP/s: the ceiling "
                             f"of any implementation doing the same work")
    notes["matmuls + SGD update"] = ("the same products plus a fused SGD update (momentum, weight decay) of the "
                                     f"model's {sum(q.numel() for q in params) / 1e6:.2f}M parameters: what any "
                                     "implementation does each step, everything else for free")
    hot = (f"Forward-Forward training step, 784 -> 3 x {opt.model.hidden_dim}, batch {B}, {device}")
    return [Row(hot if k == "zoo" else f"{hot}, {k}", "loeweX/Forward-Forward", "ms/step", ms[k], ms["loeweX"],
                target=1.5 if k == "zoo" else None, note=notes.get(k, ""))
            for k in fns if k != "loeweX"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--reference", type=Path, help="a loeweX/Forward-Forward checkout: compare training steps only")
    p.add_argument("--variants", default="", help="with --reference: comma-separated compile,bf16")
    a = p.parse_args()
    if a.reference:
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of {a.repeats}")
        print_rows(reference_rows(a.reference, a.repeats, 10, variants=tuple(filter(None, a.variants.split(",")))))
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of {a.repeats}")
    print("LocallyConnected2d, forward + backward, batch 200      dense it/s  unfold it/s  dense/unfold")
    for name in LAYERS:
        runs = [layer_rates(name, max(a.steps // 10, 5)) for _ in range(a.repeats)]
        d, u = statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
        print(f"  {name:<50} {d:10.2f} {u:12.2f} {d / u:12.1f}", flush=True)
    print("training steps/s (batch 100), plain loop over the recipe's model and data")
    for recipe in RECIPES:
        rate = statistics.median(recipe_steps_per_s(recipe, a.steps) for _ in range(a.repeats))
        print(f"  {recipe:<50} {rate:8.2f} steps/s  {100 * rate:9.0f} images/s", flush=True)


if __name__ == "__main__":
    main()
