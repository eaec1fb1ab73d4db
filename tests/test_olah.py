"""End to end against a real Hub-compatible server on loopback: olah (offline mode) serves a git repository
holding a release; `zoo.load("hf-hub:ORG/REPO@<commit>")` in a fresh process downloads it through the
unmodified huggingface_hub client and gets bit-exact weights."""
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import torch
from safetensors.torch import load_file

import zoo
from conftest import REPO

GIT_ENV = {"GIT_AUTHOR_NAME": "zoo", "GIT_AUTHOR_EMAIL": "zoo@localhost", "GIT_COMMITTER_NAME": "zoo",
           "GIT_COMMITTER_EMAIL": "zoo@localhost", "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1"}


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, env={**os.environ, **GIT_ENV}, check=True,
                          capture_output=True, text=True).stdout.strip()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_download_from_olah_on_loopback(tmp_path):
    torch.manual_seed(0)
    module = zoo.create("forward_forward", in_features=64, hidden=[32, 16], num_classes=10)
    repo = tmp_path / "mirrors" / "models" / "hinton-zoo" / "ff-tiny"
    zoo.save_pretrained(module, repo, metrics={"test/acc": 0.5})
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "release")
    commit = git(repo, "rev-parse", "HEAD")

    port = free_port()
    (tmp_path / "olah.toml").write_text(textwrap.dedent(f"""\
        [basic]
        host = "127.0.0.1"
        port = {port}
        repos-path = "{tmp_path / 'repos'}"
        mirrors-path = ["{tmp_path / 'mirrors'}"]
        hf-scheme = "http"
        hf-netloc = "127.0.0.1:9"
        hf-lfs-netloc = "127.0.0.1:9"
        mirror-scheme = "http"
        mirror-netloc = "127.0.0.1:{port}"
        mirror-lfs-netloc = "127.0.0.1:{port}"

        [accessibility]
        offline = true
        """))
    olah = shutil.which("olah-cli") or str(Path(sys.executable).parent / "olah-cli")
    log = open(tmp_path / "olah.log", "wb")
    server = subprocess.Popen([olah, "--config", str(tmp_path / "olah.toml"), "--log-path", str(tmp_path / "logs")],
                              cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            assert server.poll() is None, (tmp_path / "olah.log").read_text()
            try:
                head = urllib.request.Request(f"{url}/hinton-zoo/ff-tiny/resolve/{commit}/config.json", method="HEAD")
                if urllib.request.urlopen(head, timeout=2).status == 200:
                    break
            except OSError:
                pass
            assert time.time() < deadline, "olah did not start within 60 s"
            time.sleep(0.2)
        out = tmp_path / "loaded.safetensors"
        code = ("import zoo, sys; from safetensors.torch import save_file; "
                f"m = zoo.load('hf-hub:hinton-zoo/ff-tiny@{commit}'); "
                f"save_file({{k: v.contiguous() for k, v in m.state_dict().items()}}, {str(out)!r})")
        env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
        env.update(HF_ENDPOINT=url, HF_HUB_OFFLINE="0", HF_HUB_CACHE=str(tmp_path / "cache"),
                   HF_HUB_DISABLE_TELEMETRY="1", NO_PROXY="127.0.0.1,localhost")
        proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 0, proc.stderr[-3000:]
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
    loaded = load_file(out)
    own = module.state_dict()
    assert loaded.keys() == own.keys() and all(torch.equal(loaded[k], own[k]) for k in own)
    assert (tmp_path / "cache" / "models--hinton-zoo--ff-tiny" / "snapshots" / commit / "model.safetensors").exists()
