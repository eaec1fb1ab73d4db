"""What the benchmarks' plain PyTorch loops share: a recipe's model, set-up DataModule and optimiser, taken from
a LightningCLI built with run=False, for a training loop without the Trainer."""
from __future__ import annotations

import torch


def plain_parts(cli) -> tuple[torch.nn.Module, object, torch.optim.Optimizer]:
    """(model in train mode, DataModule set up for fitting, its configured optimiser without the scheduler)."""
    model, dm = cli.model, cli.datamodule
    dm.prepare_data()
    dm.setup("fit")
    opt = model.configure_optimizers()
    opt = opt["optimizer"] if isinstance(opt, dict) else opt
    model.train()
    return model, dm, opt
