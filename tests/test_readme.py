"""README: opens with the two fresh-machine commands; its generated tables match the catalogue and the
paper list; .ci/run runs exactly the README's test command."""
import re
import subprocess
import sys

import yaml
from conftest import REPO


def test_readme_opens_with_install_and_test_commands():
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)\n```", text, re.S)
    assert blocks[0] == "pip install -e . && zoo reproduce forward-forward-digits"
    assert blocks[1].startswith("pip install -e '.[test]' && ") and "pytest" in blocks[1]
    assert text.index(blocks[1]) < text.index("## ")  # both come before the first section


def test_ci_runs_the_readme_test_command():
    marker = "<!-- ci: the next code block is the test command that .ci/run executes -->"
    text = (REPO / "README.md").read_text()
    test_cmd = re.findall(r"```bash\n(.*?)\n```", text, re.S)[1]
    assert text.index(marker) < text.index(test_cmd) and "```" not in text[text.index(marker):text.index(test_cmd) - 8]
    assert "<!-- ci: the next code block is the test command" in (REPO / ".ci" / "run").read_text()


def test_generated_tables_are_fresh():
    proc = subprocess.run([sys.executable, "docs/readme_tables.py", "--check"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_paper_list_has_all_38():
    papers = yaml.safe_load((REPO / "docs" / "papers.yaml").read_text())["papers"]
    assert [p["n"] for p in papers] == list(range(1, 39))
    assert all(p["status"] in {"planned", "partial", "not-trainable"} for p in papers)
