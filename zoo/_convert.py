"""`zoo convert NAME`: an official checkpoint from another framework becomes a zoo release.

The catalogue entry's `source` names the framework, where the official files live and the converter (a function
registered by the paper's package with `register_converter`). A converter maps every variable of the checkpoint
onto the zoo module's state dict through `StateBuilder`, which is strict: a variable neither mapped nor explicitly
skipped, a module tensor left unfilled, or a shape that differs is an error listing all of them.

The layer helpers below hold the conventions of Keras layers, each proven against the Keras layer on the same input
in tests/test_convert.py: Dense kernels are [in, out]; MultiHeadAttention projects with [d, heads, head_dim]
kernels and [heads, head_dim] biases and outputs through a [heads, head_dim, d] kernel; Conv2D kernels are
[kh, kw, in, out]; BatchNormalization keeps gamma, beta, moving_mean and moving_variance.

TensorFlow is needed only to read the checkpoint (`pip install 'hinton-zoo[convert]'`) and is imported only here.

A PyTorch source (`framework: pytorch`, a `torch.save` file such as Canonical Capsules' released `.pth`) is read
only through torch's restricted loader (`weights_only=True`: tensors, numbers, strings and containers); a file that
needs anything more to unpickle is refused, never loaded. Its nested dicts become dotted variable names. A NumPy
source (`framework: numpy`, BiT's released `.npz` weights) is read with `allow_pickle=False`.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import sys
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from zoo._errors import CheckpointNotAvailable, ConversionError
from zoo._hub import _matches
from zoo._paths import zoo_home

# variables a training checkpoint carries that are not weights: optimizer state, step counters, the object graph
TRAINING_STATE = ("_CHECKPOINTABLE_OBJECT_GRAPH", "optimizer/*", "*/.OPTIMIZER_SLOT/*", "global_step",
                  "save_counter", "*/ExponentialMovingAverage*")
TF2_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"

_CONVERTERS: dict[str, Callable] = {}


def register_converter(key: str):
    """Function decorator: `fn(builder, module)` maps an official checkpoint onto `module` for entries whose
    `source.converter` is `key`, through the `StateBuilder` whose `variables` map checkpoint names (TF2 object
    paths without the `/.ATTRIBUTES/VARIABLE_VALUE` suffix) to arrays."""

    def wrap(fn: Callable) -> Callable:
        _CONVERTERS[key] = fn
        return fn

    return wrap


def converter(key: str) -> Callable:
    import importlib

    importlib.import_module("zoo.models")
    if key not in _CONVERTERS:
        raise ConversionError(f"no converter {key!r}; known: {', '.join(sorted(_CONVERTERS)) or 'none'}")
    return _CONVERTERS[key]


# ----------------------------------------------------------------------------- strict mapping
@dataclass
class StateBuilder:
    """Collects a module's state dict from checkpoint variables and refuses anything left over.

    `take(src, dst, fn)` stores fn(variables[src]) as dst; `fill(dst, value)` sets a tensor the checkpoint has no
    counterpart for (BatchNorm's batch counter), recorded as filled; `skip` patterns name variables that are
    deliberately not weights. `finish(own)` checks the result against the module's own state dict."""

    variables: Mapping[str, np.ndarray]
    skip: tuple[str, ...] = TRAINING_STATE
    state: dict[str, Any] = field(default_factory=dict)
    used: set[str] = field(default_factory=set)
    filled: list[str] = field(default_factory=list)
    absent: list[str] = field(default_factory=list)

    def take(self, src: str, dst: str, fn: Callable[[np.ndarray], np.ndarray] = lambda a: a) -> None:
        if src not in self.variables:
            self.absent.append(f"{src} (for {dst})")
            return
        if dst in self.state:
            raise ConversionError(f"two checkpoint variables map to {dst}: the converter is wrong")
        self.used.add(src)
        a = np.asarray(fn(np.asarray(self.variables[src])))
        self.state[dst] = a.copy() if a.ndim == 0 else np.ascontiguousarray(a)  # ascontiguousarray makes 0-d 1-d

    def fill(self, dst: str, value: np.ndarray) -> None:
        self.state[dst] = value
        self.filled.append(dst)

    def skipped(self) -> list[str]:
        return sorted(k for k in self.variables if k not in self.used and _matches(k, self.skip))

    def finish(self, own: Mapping[str, Any], what: str) -> dict[str, Any]:
        import torch

        leftover = sorted(k for k in self.variables if k not in self.used and not _matches(k, self.skip))
        missing = sorted(k for k in own if k not in self.state)
        unexpected = sorted(k for k in self.state if k not in own)
        shapes = sorted(f"{k}: converted {tuple(v.shape)} vs model {tuple(own[k].shape)}"
                        for k, v in self.state.items() if k in own and tuple(v.shape) != tuple(own[k].shape))
        problems = [(f"checkpoint variables not mapped ({len(leftover)})", leftover),
                    (f"checkpoint variables the converter expects but the file lacks ({len(self.absent)})",
                     self.absent),
                    (f"model tensors left unfilled ({len(missing)})", missing),
                    (f"converted tensors the model does not have ({len(unexpected)})", unexpected),
                    (f"shapes that differ ({len(shapes)})", shapes)]
        problems = [(t, items) for t, items in problems if items]
        if problems:
            body = "".join(f"\n  {t}: " + ", ".join(items[:8]) + (f" ... and {len(items) - 8} more"
                                                               if len(items) > 8 else "") for t, items in problems)
            raise ConversionError(
                f"{what}: the checkpoint does not convert to this model.{body}\nIs it a checkpoint of this "
                f"architecture and size (the entry's init_args)? Nothing was written.")
        return {k: torch.from_numpy(np.asarray(v)).to(own[k].dtype) for k, v in self.state.items()}

    # --------------------------------------------------------------- Keras layer conventions
    def dense(self, src: str, dst: str, bias: bool = True) -> None:
        """Keras Dense: y = x @ kernel + bias, kernel [in, out] -> Linear.weight [out, in]."""
        self.take(f"{src}/kernel", f"{dst}.weight", lambda k: k.T)
        if bias:
            self.take(f"{src}/bias", f"{dst}.bias")

    def layer_norm(self, src: str, dst: str) -> None:
        self.take(f"{src}/gamma", f"{dst}.weight")
        self.take(f"{src}/beta", f"{dst}.bias")

    def mha(self, src: str, query: str, key: str, value: str, out: str) -> None:
        """Keras MultiHeadAttention: query/key/value kernels [d, heads, head_dim] and biases [heads, head_dim]
        (heads-major flattening, as the zoo's attention splits heads); the output kernel [heads, head_dim, d]."""
        for name, dst in (("_query_dense", query), ("_key_dense", key), ("_value_dense", value)):
            self.take(f"{src}/{name}/kernel", f"{dst}.weight", lambda k: k.reshape(k.shape[0], -1).T)
            self.take(f"{src}/{name}/bias", f"{dst}.bias", lambda b: b.reshape(-1))
        self.take(f"{src}/_output_dense/kernel", f"{out}.weight", lambda k: k.reshape(-1, k.shape[-1]).T)
        self.take(f"{src}/_output_dense/bias", f"{out}.bias")

    def conv2d(self, src: str, dst: str, bias: bool = False) -> None:
        """Keras Conv2D (channels last): kernel [kh, kw, in, out] -> Conv2d.weight [out, in, kh, kw]."""
        self.take(f"{src}/kernel", f"{dst}.weight", lambda k: k.transpose(3, 2, 0, 1))
        if bias:
            self.take(f"{src}/bias", f"{dst}.bias")

    def batch_norm(self, src: str, dst: str) -> None:
        """Keras BatchNormalization -> BatchNorm2d; the batch counter has no counterpart and starts at 0."""
        for a, b in (("gamma", "weight"), ("beta", "bias"), ("moving_mean", "running_mean"),
                     ("moving_variance", "running_var")):
            self.take(f"{src}/{a}", f"{dst}.{b}")
        self.fill(f"{dst}.num_batches_tracked", np.zeros((), np.int64))


# ----------------------------------------------------------------------------- reading TensorFlow checkpoints
# TensorFlow runs in a child process: loaded into a process that then imports torch's stack (triton), it crashes
# it, so the zoo never holds both. The child writes the variables to an .npz read back without pickle.
_READER = r"""
import json, os, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
try:
    import tensorflow as tf
except ImportError:
    sys.exit(3)
import numpy as np
reader = tf.train.load_checkpoint(sys.argv[1])
names, arrays = [], {}
for name in sorted(reader.get_variable_to_shape_map()):
    value = np.zeros(0) if name == "_CHECKPOINTABLE_OBJECT_GRAPH" else np.asarray(reader.get_tensor(name))
    if value.dtype.kind in "OSUV":
        value = np.zeros(0)  # strings (object graph, hash tables) are never weights
    arrays[f"v{len(names)}"] = value
    names.append(name)
np.savez(sys.argv[2], **arrays)
with open(sys.argv[2] + ".json", "w") as f:
    json.dump({"names": names, "tensorflow": tf.__version__}, f)
"""


def read_tf_checkpoint(prefix: str | os.PathLike) -> tuple[dict[str, np.ndarray], str]:
    """All variables of a TF checkpoint as arrays, and the TensorFlow version that read them. TF2 object-based
    names lose the `/.ATTRIBUTES/VARIABLE_VALUE` suffix (`model/proj/kernel`). Nothing is unpickled: TF reads its
    own tensor-bundle format, and the arrays come back through numpy's pickle-free .npz."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "variables.npz"
        run = subprocess.run([sys.executable, "-c", _READER, str(prefix), str(out)], capture_output=True, text=True)
        if run.returncode == 3:
            raise ConversionError("reading the official TensorFlow checkpoint needs TensorFlow: "
                                  "pip install 'hinton-zoo[convert]' (tensorflow-cpu is enough)")
        if run.returncode != 0:
            raise ConversionError(f"TensorFlow could not read the checkpoint {prefix}:\n{run.stderr[-2000:]}")
        meta = json.loads(out.with_name(out.name + ".json").read_text())
        with np.load(out, allow_pickle=False) as z:
            arrays = [z[f"v{i}"] for i in range(len(meta["names"]))]
    variables = {(n[: -len(TF2_SUFFIX)] if n.endswith(TF2_SUFFIX) else n): a for n, a in zip(meta["names"], arrays)}
    return variables, meta["tensorflow"]


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The arrays of a NumPy .npz file (BiT's released weights) by name, read with `allow_pickle=False`: a file
    holding pickled objects is refused, never loaded."""
    import zipfile

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    if not zipfile.is_zipfile(path):
        raise ConversionError(f"{path}: not an .npz archive (a zip of .npy arrays); download it again")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except ValueError as e:
        raise ConversionError(f"{path}: refused. It holds pickled objects ({e}), and the zoo never unpickles a "
                              f"downloaded file") from None
    except (OSError, EOFError) as e:
        raise ConversionError(f"{path}: not a readable .npz file ({e}); download it again") from None


def _torch_version() -> str:
    import torch

    return torch.__version__


def read_torch_checkpoint(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The tensors of a `torch.save` file as {dotted name: array}, read with `weights_only=True` only: a file whose
    unpickling needs any other object is a ConversionError, and nothing in it runs."""
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError, TypeError) as e:
        raise ConversionError(
            f"{path}: refused. Reading it needs more than tensors and plain containers (torch's weights_only "
            f"loader said: {str(e).splitlines()[0]}), and the zoo never unpickles anything else") from None
    out: dict[str, np.ndarray] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, torch.Tensor):
            out[prefix] = value.detach().cpu().numpy()
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                walk(f"{prefix}.{i}", v)
        else:
            out[prefix] = np.asarray(value)

    walk("", obj)
    return out


def checkpoint_prefix(path: str | os.PathLike) -> Path:
    """A TF checkpoint given as its folder (the `checkpoint` file's latest, else the only `*.index`), its prefix,
    or its `.index` file -> the prefix."""
    p = Path(path).expanduser()
    if p.is_dir():
        state = p / "checkpoint"
        if state.is_file():
            m = re.search(r'^model_checkpoint_path:\s*"([^"]+)"', state.read_text(), re.M)
            if m:
                prefix = Path(m[1]) if os.path.isabs(m[1]) else p / m[1]
                if prefix.with_name(prefix.name + ".index").is_file():
                    return prefix
        indexes = sorted(p.glob("*.index"))
        if len(indexes) != 1:
            found = ", ".join(i.name for i in indexes) or "none"
            raise ConversionError(f"{p}: expected one TensorFlow checkpoint (*.index) in the folder, found {found}; "
                                  f"pass the checkpoint prefix (.../ckpt-NNN) instead")
        return indexes[0].with_suffix("")
    if p.suffix == ".index":
        p = p.with_suffix("")
    if not p.with_name(p.name + ".index").is_file():
        raise CheckpointNotAvailable(f"{path}: no TensorFlow checkpoint there (expected {p}.index and its "
                                     f"{p.name}.data-* shards)")
    return p


def npz_file(path: str | os.PathLike, include: tuple[str, ...] = ("*.npz",)) -> Path:
    """A NumPy checkpoint given as the file, or as a folder holding exactly one file that `include` matches."""
    p = Path(path).expanduser()
    if p.is_dir():
        found = sorted(q for q in p.iterdir() if q.is_file() and _matches(q.name, include))
        if len(found) != 1:
            names = ", ".join(q.name for q in found) or "none"
            raise ConversionError(f"{p}: expected one file matching {', '.join(include)}, found {names}; pass the "
                                  f"file itself")
        return found[0]
    if not p.is_file():
        raise CheckpointNotAvailable(f"{path}: no such file")
    return p


def checkpoint_files(prefix: Path) -> list[Path]:
    return sorted([prefix.with_name(prefix.name + ".index"), *prefix.parent.glob(prefix.name + ".data-*")])


# ----------------------------------------------------------------------------- fetching the official files
def _gcs_prefix(url: str) -> str:
    """The object-name prefix of a gs:// folder: "" for a bucket's top level (gs://bit_models), else "path/"."""
    path = url.removeprefix("gs://").partition("/")[2].strip("/")
    return path + "/" if path else ""


def _gcs_objects(url: str, opener=urllib.request.urlopen) -> list[dict[str, Any]]:
    """The objects under gs://BUCKET/PREFIX (name, size, md5Hash, generation) from the public JSON API."""
    bucket = url.removeprefix("gs://").partition("/")[0]
    prefix = _gcs_prefix(url)
    items, token = [], ""
    while True:
        q = urllib.parse.urlencode({**({"prefix": prefix} if prefix else {}),
                                    **({"pageToken": token} if token else {})})
        with opener(f"https://storage.googleapis.com/storage/v1/b/{bucket}/o?{q}") as r:
            page = json.load(r)
        items += page.get("items", [])
        token = page.get("nextPageToken", "")
        if not token:
            return [dict(i, bucket=bucket) for i in items if not i["name"].endswith("/")]


def download_gcs(url: str, dest: Path, opener=urllib.request.urlopen, include: tuple[str, ...] = ("*",)) -> Path:
    """Download the public gs:// folder `url` into `dest` (with progress), each object checked against the md5
    Google Cloud Storage lists for it; files already there with the right md5 are kept. Only the files whose paths
    in the folder match an `include` pattern are fetched (a SimCLR folder also holds a TF-Hub copy and the graph,
    which conversion does not read). Returns `dest`."""
    from tqdm.auto import tqdm

    from zoo._hub import sha256_file

    try:
        objects = _gcs_objects(url, opener)
    except OSError as err:
        raise CheckpointNotAvailable(f"listing {url} failed ({err}). Download the folder yourself "
                                     f"(gsutil -m cp -r {url} .) and pass it with --checkpoint.") from err
    prefix = _gcs_prefix(url)
    objects = [o for o in objects if _matches(o["name"][len(prefix):], tuple(include))]
    if not objects:
        matching = "" if include == ("*",) else " matching " + ", ".join(include)
        raise CheckpointNotAvailable(f"{url} lists no files{matching}; is the address right?")
    dest.mkdir(parents=True, exist_ok=True)
    total = sum(int(o["size"]) for o in objects)
    with tqdm(total=total, unit="B", unit_scale=True, desc=f"zoo convert: {url}", file=sys.stderr) as bar:
        for o in objects:
            target = dest / Path(o["name"]).name
            want = base64.b64decode(o["md5Hash"]).hex()
            if target.is_file() and sha256_file(target, "md5") == want:
                bar.update(int(o["size"]))
                continue
            part = target.with_name(target.name + ".part")
            h = hashlib.md5()
            src = f"https://storage.googleapis.com/{o['bucket']}/{urllib.parse.quote(o['name'])}"
            with opener(src) as r, open(part, "wb") as f:
                for chunk in iter(lambda: r.read(1 << 20), b""):
                    f.write(chunk)
                    h.update(chunk)
                    bar.update(len(chunk))
            if h.hexdigest() != want:
                part.unlink()
                raise CheckpointNotAvailable(f"{src}: md5 {h.hexdigest()} is not the {want} the bucket lists; "
                                             f"the download was corrupted, run `zoo convert` again")
            os.replace(part, target)
    return dest


# ----------------------------------------------------------------------------- the command
def _tokenizer_file(name: str, url: str, given: str | os.PathLike | None) -> Path:
    """The official tokenizer model a source names (`tokenizer: gs://.../FILE`): `given`, or downloaded next to the
    checkpoint in $ZOO_HOME/sources/NAME."""
    if given is not None:
        path = Path(given).expanduser()
        if not path.is_file():
            raise CheckpointNotAvailable(f"--tokenizer {path}: no such file")
        return path
    folder, _, file = url.rpartition("/")
    return download_gcs(folder, zoo_home() / "sources" / name / "tokenizer", include=(file,)) / file


def convert(name: str, checkpoint: str | os.PathLike | None = None, output: str | os.PathLike | None = None,
            update_catalog: bool = False, tokenizer: str | os.PathLike | None = None) -> Path:
    """Convert the official checkpoint of catalogue entry `name` into a release folder (default
    $ZOO_HOME/releases/NAME), recording the source and the sha256 of every file read in provenance.json. A source
    with a `tokenizer` (Pix2seq v2's SentencePiece model) has it read too (`tokenizer`: the file on disk) and kept in
    the model."""
    from zoo import _catalog
    from zoo._hub import sha256_file, write_release
    from zoo._paths import releases_dir
    from zoo._registry import model_class

    entry = _catalog.get(name)
    if entry.source is None:
        raise ConversionError(f"{name!r} has no official checkpoint to convert (no `source` in its catalogue "
                              f"entry); train it with `zoo reproduce {name}`")
    if entry.source["framework"] == "pytorch":
        if checkpoint is None:
            raise CheckpointNotAvailable(
                f"{name}: the official weights are a file at {entry.source['url']}, which needs a browser to "
                f"download; download it, then run `zoo convert {name} --checkpoint FILE`")
        path = Path(checkpoint).expanduser()
        files = {path.name: sha256_file(path)}
        variables, framework = read_torch_checkpoint(path), f"pytorch (read by torch {_torch_version()})"
        checkpoint_name = path.name
    elif entry.source["framework"] == "numpy":
        include = tuple(entry.source.get("include", ["*.npz"]))
        if checkpoint is None:
            checkpoint = download_gcs(entry.source["url"], zoo_home() / "sources" / name, include=include)
        path = npz_file(checkpoint, include)
        files = {path.name: sha256_file(path)}
        variables, framework = read_npz(path), f"numpy {np.__version__} (.npz, read without pickle)"
        checkpoint_name = path.name
    else:
        if checkpoint is None:
            checkpoint = download_gcs(entry.source["url"], zoo_home() / "sources" / name,
                                      include=tuple(entry.source.get("include", ["*"])))
        prefix = checkpoint_prefix(checkpoint)
        files = {p.name: sha256_file(p) for p in checkpoint_files(prefix)}
        variables, tf_version = read_tf_checkpoint(prefix)
        framework, checkpoint_name = f"tensorflow {tf_version}", prefix.name
    module = model_class(entry.model)(**entry.init_args)
    if entry.source.get("tokenizer"):
        path = _tokenizer_file(name, entry.source["tokenizer"], tokenizer)
        module.set_caption_tokenizer(path.read_bytes())
        files[path.name] = sha256_file(path)
    module.load_state_dict(convert_state(entry.source["converter"], variables, module, name), strict=True)
    module.zoo_entry = entry
    provenance = {"source": entry.source["url"], "framework": framework,
                  "converter": entry.source["converter"], "checkpoint": checkpoint_name, "files_sha256": files,
                  "variables": len(variables)}
    folder = write_release(module, Path(output) if output else releases_dir() / name, name=name,
                           provenance=provenance)
    if update_catalog:
        _catalog.update_entry(name, num_params=sum(p.numel() for p in module.parameters()))
    return folder


def convert_state(key: str, variables: Mapping[str, np.ndarray], module, what: str) -> dict[str, Any]:
    """The state dict converter `key` makes of `variables` for `module`, checked strictly (see StateBuilder)."""
    builder = StateBuilder(variables)
    converter(key)(builder, module)
    return builder.finish(module.state_dict(), what)
