"""Optimisation pieces shared by several papers: schedules, Lookahead, and its evaluation callback."""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import lightning as L
import torch

__all__ = ["Lookahead", "LookaheadSlowWeights", "check_scaled_optimizer", "fit_in_memory", "lars_groups",
           "linear_cooldown", "scaled_optimizer", "warmup_cosine", "with_cooldown"]


def linear_cooldown(max_epochs: int):
    """LambdaLR factor: constant for the first half of training, then linear decay towards zero
    (the Forward-Forward reference code's schedule)."""
    half = max_epochs / 2

    def factor(epoch: int) -> float:
        return 1.0 if epoch < half else (max_epochs - epoch) / (max_epochs - half)

    return factor


def warmup_cosine(total_steps: int, warmup_steps: int):
    """LambdaLR factor: linear warm-up over `warmup_steps`, then cosine decay to zero at `total_steps`."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))))

    return factor


def check_scaled_optimizer(optimizer: str, lr_scaling: str) -> None:
    """`scaled_optimizer`'s choices, checked when a module is built rather than when training starts."""
    if optimizer not in ("lars", "sgd", "adam") or lr_scaling not in ("linear", "sqrt", "none"):
        raise ValueError(f"optimizer={optimizer!r} / lr_scaling={lr_scaling!r}: choose lars, sgd or adam / linear, "
                         "sqrt or none")


def lars_groups(module: torch.nn.Module, weight_decay: float, heads: tuple[str, ...] = ()) -> list[dict]:
    """The official SimCLR code's LARS groups (`EXCLUDE_FROM_WEIGHT_DECAY` and the adaptation it shares): every
    weight tensor adapted by the trust ratio and decayed, whatever the decay (0 included); 1-D tensors (norms,
    biases) neither; the supervised head (parameters matching the `heads` patterns, a zoo module's `head_keys`:
    the linear probe, a fine-tuned classifier) not adapted, its weight decay added to the gradient plainly
    (`plain_decay`), as the official code adds its L2 term to the loss."""
    from fnmatch import fnmatchcase

    adapted, head, flat = [], [], []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        (flat if p.ndim <= 1 else head if any(fnmatchcase(name, h) for h in heads) else adapted).append(p)
    groups = [{"params": adapted, "weight_decay": weight_decay, "always_adapt": True},
              {"params": head, "weight_decay": 0.0, "plain_decay": weight_decay},
              {"params": flat, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def _lars_class():
    from timm.optim import Lars

    class PlainDecayLars(Lars):
        """timm's LARS; a group's `plain_decay` is added to its gradients before the step, without the trust
        ratio (`lars_groups`)."""

        @torch.no_grad()
        def step(self, closure=None):
            loss = None
            if closure is not None:
                with torch.enable_grad():
                    loss = closure()
            for group in self.param_groups:
                params = [p for p in group["params"] if p.grad is not None]
                if group.get("plain_decay") and params:
                    torch._foreach_add_([p.grad for p in params], params, alpha=group["plain_decay"])
            super().step()
            return loss

    return PlainDecayLars


def scaled_optimizer(module: L.LightningModule, optimizer: str = "lars", lr: float = 1.0, lr_scaling: str = "linear",
                     momentum: float = 0.9, weight_decay: float = 1e-4, warmup_epochs: float = 10.0,
                     lars_rule: str = "official") -> dict:
    """What `configure_optimizers` returns for the SimCLR family's recipes (google-research/simclr): the base rate
    scaled with the global batch B (all ranks; the DataModule's `batch_size`, 256 without a Trainer) as "linear"
    lr·B/256, "sqrt" lr·√B or "none"; "lars" (timm's LARS with momentum), "sgd" (momentum) or "adam", with 1-D
    tensors (norms, biases) excluded from weight decay; linear warm-up over `warmup_epochs`, then cosine decay to
    zero, per step. LARS's groups follow `lars_rule`: "official" (`lars_groups`, the module's `head_keys` as the
    supervised head), or "decayed", timm's own rule, which adapts exactly the tensors that weight decay reaches:
    with no weight decay nothing, so LARS is momentum SGD, and the head is adapted (the catalogue's SimCLR-family
    entries measured before 2026-12-05 were trained so). Outside a Trainer (plain benchmark loops) the rate stays
    at its base, unscheduled."""
    from timm.optim import Lars, param_groups_weight_decay

    check_scaled_optimizer(optimizer, lr_scaling)
    if lars_rule not in ("official", "decayed"):
        raise ValueError(f"lars_rule={lars_rule!r}: 'official' (google-research/simclr's groups) or 'decayed' "
                         "(timm's: adapt only what weight decay reaches)")
    trainer = module._trainer
    B = 256 if trainer is None else (int(getattr(trainer.datamodule, "batch_size", 256))
                                     * max(1, trainer.world_size))
    rate = {"linear": lr * B / 256, "sqrt": lr * math.sqrt(B), "none": lr}[lr_scaling]
    if optimizer == "lars" and lars_rule == "official":
        groups = lars_groups(module, weight_decay, tuple(getattr(module, "head_keys", ())))
        opt: torch.optim.Optimizer = _lars_class()(groups, lr=rate, momentum=momentum)
    elif optimizer == "lars":
        opt = Lars(param_groups_weight_decay(module, weight_decay), lr=rate, momentum=momentum)
    elif optimizer == "sgd":
        opt = torch.optim.SGD(param_groups_weight_decay(module, weight_decay), lr=rate, momentum=momentum)
    else:
        opt = torch.optim.Adam(param_groups_weight_decay(module, weight_decay), lr=rate)
    if trainer is None:
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    else:
        total = max(1, int(trainer.estimated_stepping_batches))
        epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else None
        warmup = round(total * warmup_epochs / epochs) if epochs else 0
        sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(total, max(1, min(warmup, total))))
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def with_cooldown(opt: torch.optim.Optimizer, max_epochs: int | None, enabled: bool = True):
    """What `configure_optimizers` returns: `opt` alone, or with a per-epoch linear cooldown."""
    if not enabled or max_epochs is None or max_epochs < 1:
        return opt
    sched = torch.optim.lr_scheduler.LambdaLR(opt, linear_cooldown(max_epochs))
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}


class Lookahead(torch.optim.Optimizer):
    """Lookahead (Zhang, Lucas, Hinton & Ba 2019, Algorithm 1): the inner optimiser takes k fast steps, then
    the slow weights move φ ← φ + α(θ − φ) and the fast weights restart from them, θ ← φ.

    `Lookahead(torch.optim.SGD(model.parameters(), lr=0.1), k=5, alpha=0.5)` wraps any optimiser. From a
    LightningCLI config, give the parameters' optimiser as `base`:
    `--optimizer=zoo.optim.Lookahead --optimizer.base=torch.optim.Adam --optimizer.base.lr=1e-3`.

    Unlike the reference code, `state_dict()` holds the slow weights and the step count, so a resumed run
    continues exactly. The param groups are the inner optimiser's own, so LR schedulers act on it.
    Evaluate with the slow weights through `swap_slow()` (the `LookaheadSlowWeights` callback does it).
    """

    def __init__(self, params: Any, base: Callable[[Iterable], torch.optim.Optimizer] | None = None, k: int = 5,
                 alpha: float = 0.5):
        if isinstance(params, torch.optim.Optimizer):
            if base is not None:
                raise ValueError("pass an optimizer, or parameters with base=, not both")
            inner = params
        elif base is None:
            raise ValueError("Lookahead needs an optimizer to wrap, or base= (e.g. torch.optim.SGD) to build one")
        else:
            inner = base(params)
        if k < 1 or not 0.0 < alpha <= 1.0:
            raise ValueError(f"need k >= 1 and 0 < alpha <= 1, got k={k}, alpha={alpha}")
        super().__init__([p for g in inner.param_groups for p in g["params"]], dict(inner.defaults))
        self.optimizer, self.k, self.alpha = inner, k, alpha
        self.param_groups = inner.param_groups
        self.fast_steps = 0
        self._swapped: list[torch.Tensor] | None = None
        for p in self._params():
            self.state[p]["slow"] = p.detach().clone()

    def _params(self) -> list[torch.Tensor]:
        return [p for g in self.optimizer.param_groups for p in g["params"]]

    def __repr__(self) -> str:
        return f"Lookahead(k={self.k}, alpha={self.alpha}, {self.optimizer!r})"

    def step(self, closure=None):
        loss = self.optimizer.step(closure)
        self.fast_steps += 1
        if self.fast_steps % self.k == 0:
            with torch.no_grad():
                fast = self._params()
                slow = [self.state[p]["slow"] for p in fast]
                torch._foreach_lerp_(slow, fast, self.alpha)  # φ ← φ + α(θ − φ)
                torch._foreach_copy_(fast, slow)  # θ ← φ
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return {"inner": self.optimizer.state_dict(), "slow": [self.state[p]["slow"] for p in self._params()],
                "fast_steps": self.fast_steps, "k": self.k, "alpha": self.alpha}

    def load_state_dict(self, state_dict: dict) -> None:
        self.optimizer.load_state_dict(state_dict["inner"])
        self.param_groups = self.optimizer.param_groups  # the inner optimiser rebuilt its groups
        params = self._params()
        if len(state_dict["slow"]) != len(params):
            raise ValueError(f"state has {len(state_dict['slow'])} slow tensors for {len(params)} parameters")
        for p, s in zip(params, state_dict["slow"]):
            self.state[p]["slow"] = s.detach().to(device=p.device, dtype=p.dtype).clone()
        self.fast_steps = int(state_dict["fast_steps"])
        self.k, self.alpha = int(state_dict["k"]), float(state_dict["alpha"])

    @torch.no_grad()
    def swap_slow(self) -> None:
        """Put the slow weights into the model (keeping the fast ones aside); call again to swap back."""
        params = self._params()
        if self._swapped is None:
            self._swapped = [p.detach().clone() for p in params]
            torch._foreach_copy_(params, [self.state[p]["slow"] for p in params])
        else:
            torch._foreach_copy_(params, self._swapped)
            self._swapped = None


class LookaheadSlowWeights(L.Callback):
    """Validate and test with Lookahead's slow weights (the paper's evaluation), then restore the fast ones;
    when training ends, the model keeps the slow weights, so saved releases hold them. Testing swaps too, so a
    run resumed from a checkpoint whose training had already ended (the fit returns at once, without
    `on_train_end`) is still tested on its slow weights. A test alone from a checkpoint (no fit, so no optimiser)
    sees the checkpoint's fast weights."""

    @staticmethod
    def _lookaheads(trainer: L.Trainer) -> list[Lookahead]:
        return [o for o in trainer.optimizers if isinstance(o, Lookahead)]

    def _swap(self, trainer: L.Trainer, *args) -> None:
        for opt in self._lookaheads(trainer):
            opt.swap_slow()

    on_validation_start = on_validation_end = on_test_start = on_test_end = _swap

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for opt in self._lookaheads(trainer):
            opt.swap_slow()
            opt._swapped = None


def fit_in_memory(model: torch.nn.Module, loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                  inputs: torch.Tensor, targets: torch.Tensor, epochs: int, batch_size: int = 100, lr: float = 0.01,
                  momentum: float = 0.9, weight_decay: float = 0.0, cooldown: bool = True,
                  seed: int = 0) -> torch.nn.Module:
    """Minibatch SGD over tensors already in memory, without a Trainer: the short extra runs that some papers'
    analyses make (several seeds, a student). `loss(x, target)` is the batch objective of `model`'s parameters.

    Each epoch visits a permutation seeded by `seed + epoch` (as the zoo's DataModules shuffle), and with
    `cooldown` the learning rate follows the zoo's linear cooldown over the second half of training. Batches
    are taken on the inputs' device. Returns `model`, in eval mode."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, linear_cooldown(epochs) if cooldown else (lambda epoch: 1.0))
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(inputs), generator=torch.Generator().manual_seed(seed + epoch))
        for idx in order.to(inputs.device).split(batch_size):
            opt.zero_grad(set_to_none=True)
            loss(inputs[idx], targets[idx]).backward()
            opt.step()
        schedule.step()
    return model.eval()
