"""The installed wheel carries checkpoints.yaml and configs/, so the catalogue works outside the source tree."""
import os
import subprocess
import sys
import zipfile

from conftest import REPO


def test_wheel_ships_catalogue_and_recipes(tmp_path):
    src = tmp_path / "src"  # a copy of the tracked files, so the build leaves nothing in the source tree
    src.mkdir()
    subprocess.run(f"git ls-files -z | xargs -0 cp --parents -P -t {src}", shell=True, cwd=REPO, check=True)
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "dist")], check=True, capture_output=True, cwd=tmp_path)
    wheel = next((tmp_path / "dist").glob("hinton_zoo-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"zoo/_resources/checkpoints.yaml", "zoo/_resources/configs/forward_forward/digits.yaml",
            "zoo/_resources/configs/strategies/ddp.yaml"} <= names
    zipfile.ZipFile(wheel).extractall(tmp_path / "site")
    code = ("import zoo, sys; from zoo._paths import resolve_recipe; "
            "assert zoo.__file__.startswith(sys.argv[1]), zoo.__file__; "
            "print(len(zoo.list()), resolve_recipe(zoo.info('forward-forward-digits').recipe).is_file())")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    env.pop("ZOO_CATALOG", None)
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "site")], env=env, cwd=tmp_path,
                         capture_output=True, text=True, check=True).stdout.split()
    assert int(out[0]) >= 4 and out[1] == "True"
