"""A test double of the Hugging Face Hub's HTTP API (labelled as such: no installable server accepts
uploads). It speaks just enough for the real huggingface_hub client to create a repo, make one commit with
inline ("regular") file content, and download files by commit id:

  POST /api/repos/create                        200 {"url"}; 409 with the same body when it exists
  POST /api/validate-yaml                       the card's front matter must be a YAML mapping
  POST /api/models/{repo}/preupload/{rev}       every file "regular", so content comes inline
  POST /api/models/{repo}/commit/{rev}          ndjson header + base64 files -> {"commitOid", "commitUrl"}
  HEAD|GET /{repo}/resolve/{rev}/{path}         X-Repo-Commit and ETag headers, then the bytes
"""
from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import yaml


class HubDouble:
    def __init__(self):
        self.repos: dict[str, dict[str, dict[str, bytes]]] = {}  # repo -> {"main" | commit: {path: bytes}}
        self.commits: list[str] = []
        self.fail_commit = False
        double = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def answer(self, code: int, body=b"", headers: dict | None = None, head: bool = False):
                headers = dict(headers or {})
                if isinstance(body, dict):
                    body, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
                self.send_response(code)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not head:
                    self.wfile.write(body)

            def do_POST(self):
                data = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                base = f"http://{self.headers['Host']}"
                if self.path == "/api/repos/create":
                    req = json.loads(data)
                    repo = f"{req['organization']}/{req['name']}"
                    code = 409 if repo in double.repos else 200
                    double.repos.setdefault(repo, {"main": {}})
                    return self.answer(code, {"url": f"{base}/{repo}"})
                if self.path == "/api/validate-yaml":
                    front = re.match(r"---\n(.*?)\n---", json.loads(data)["content"], re.S)
                    ok = front is not None and isinstance(yaml.safe_load(front[1]), dict)
                    return self.answer(200 if ok else 400, {"errors": [] if ok else [{"message": "not a mapping"}],
                                                            "warnings": []})
                if m := re.fullmatch(r"/api/models/([^/]+/[^/]+)/preupload/[^/?]+", self.path):
                    files = json.loads(data)["files"]
                    return self.answer(200, {"files": [{"path": f["path"], "uploadMode": "regular",
                                                        "shouldIgnore": False} for f in files]})
                if m := re.fullmatch(r"/api/models/([^/]+/[^/]+)/commit/[^/?]+(\?.*)?", self.path):
                    if double.fail_commit:
                        return self.answer(500, {"error": "simulated Hub failure"})
                    tree = dict(double.repos[m[1]]["main"])
                    for line in data.splitlines():
                        item = json.loads(line)
                        if item["key"] == "file":
                            tree[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                    oid = hashlib.sha1(repr(sorted(tree.items())).encode() + str(len(double.commits)).encode()).hexdigest()
                    double.repos[m[1]][oid] = double.repos[m[1]]["main"] = tree
                    double.commits.append(oid)
                    return self.answer(200, {"commitOid": oid, "commitUrl": f"{base}/{m[1]}/commit/{oid}"})
                self.answer(404, {"error": "no such route in the double"})

            def do_GET(self, head: bool = False):
                m = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", self.path)
                if not m or m[1] not in double.repos:
                    return self.answer(404, b"", {"X-Error-Code": "RepoNotFound"}, head)
                repo, rev = double.repos[m[1]], m[2]
                if rev not in repo or rev == "main":
                    return self.answer(404, b"", {"X-Error-Code": "RevisionNotFound"}, head)
                if m[3] not in repo[rev]:
                    return self.answer(404, b"", {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": rev}, head)
                body = repo[rev][m[3]]
                self.answer(200, body, {"X-Repo-Commit": rev, "ETag": f'"{hashlib.sha256(body).hexdigest()}"'}, head)

            def do_HEAD(self):
                self.do_GET(head=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> HubDouble:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
