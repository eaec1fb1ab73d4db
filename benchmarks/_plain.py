"""What the benchmarks' plain PyTorch loops share: a recipe's model, set-up DataModule and optimiser, taken from
a LightningCLI built with run=False, for a training loop without the Trainer."""
from __future__ import annotations


def plain_parts(cli, with_scheduler: bool = False):
    """(model in train mode, DataModule set up for fitting, its configured optimiser), and with_scheduler: its
    per-step learning-rate scheduler or None."""
    model, dm = cli.model, cli.datamodule
    dm.prepare_data()
    dm.setup("fit")
    if "estimated_stepping_batches" in type(model).configure_optimizers.__code__.co_names:
        # a schedule sized from the run (Pix2seq's): the Trainer answers, attached to model and data but not run
        model.trainer = cli.trainer
        cli.trainer.strategy.connect(model)
        cli.trainer._data_connector.attach_data(model, datamodule=dm)
    conf = model.configure_optimizers()
    opt = conf["optimizer"] if isinstance(conf, dict) else conf
    model.train()
    if not with_scheduler:
        return model, dm, opt
    sched = conf.get("lr_scheduler") if isinstance(conf, dict) else None
    sched = sched.get("scheduler") if isinstance(sched, dict) else sched
    return model, dm, opt, sched
