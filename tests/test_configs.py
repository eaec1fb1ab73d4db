"""Every recipe under configs/ that no catalogue entry cites (MNIST/CIFAR configs for users, GPU recipes) parses
through the `zoo` LightningCLI and builds its model and DataModule; tests/test_catalog.py builds the cited ones
(and checks them against their entries), so together every recipe is built once."""
import sys
from pathlib import Path

import pytest
from conftest import REPO

from zoo import _catalog

CITED = {(REPO / e.recipe).resolve() for e in _catalog.load_catalog().values()}
RECIPES = sorted(p for p in (REPO / "configs").glob("*/*.yaml")
                 if p.parent.name != "strategies" and p.resolve() not in CITED)


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_recipe_builds(recipe: Path, monkeypatch):
    from zoo._lightning_cli import ZooCLI

    monkeypatch.setattr(sys, "argv", ["zoo"])
    cli = ZooCLI(args=["--config", str(recipe), "--trainer.logger=false"], run=False)
    assert cli.model is not None and cli.datamodule is not None
    assert sum(p.numel() for p in cli.model.parameters()) > 0
