"""Every recipe under configs/ (those without a catalogue entry too: MNIST/CIFAR configs for users) parses
through the `zoo` LightningCLI and builds its model and DataModule."""
import sys
from pathlib import Path

import pytest
from conftest import REPO

RECIPES = sorted(p for p in (REPO / "configs").glob("*/*.yaml") if p.parent.name != "strategies")


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_recipe_builds(recipe: Path, monkeypatch):
    from zoo._lightning_cli import ZooCLI

    monkeypatch.setattr(sys, "argv", ["zoo"])
    cli = ZooCLI(args=["--config", str(recipe), "--trainer.logger=false"], run=False)
    assert cli.model is not None and cli.datamodule is not None
    assert sum(p.numel() for p in cli.model.parameters()) > 0
