"""A small Hub-compatible HTTP server on 127.0.0.1 for end-to-end publishing tests.

It answers the endpoints huggingface_hub's client (2.x) calls to create a repo, validate a card, pre-upload,
commit, and download (`repo_info`, `list_repo_tree`, `/resolve/`), enough for `HfApi.create_commit`,
`push_to_hub` and `snapshot_download`. Every file is declared "regular" at pre-upload, so contents arrive
base64-encoded inside the NDJSON commit and no LFS or Xet transfer is involved. Written by hand because no
library offers a local Hub; the protocol is read off huggingface_hub's `_commit_api.py`, `hf_api.py` and
`file_download.py`.

The server keeps repos in memory, records every commit, refuses requests whose bearer token is not the one it
was given (HTTP 401, as the Hub does), caps request bodies, and shuts itself down after `lifetime_s`.
"""

import base64
import hashlib
import json
import threading
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

MAX_BODY_BYTES = 256 * 2**20


def git_blob_sha1(content: bytes) -> str:
    """The git object id of a blob, which the Hub uses as a regular file's ETag."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class Commit:
    oid: str
    message: str
    files: dict[str, bytes]  # the whole tree after this commit


@dataclass
class Repo:
    repo_id: str
    private: bool
    commits: list[Commit] = field(default_factory=list)
    commit_requests: int = 0  # commits made through the /commit endpoint (repo creation adds one itself)

    @property
    def head(self) -> Commit:
        return self.commits[-1]

    def at(self, revision: str) -> Commit | None:
        if revision == "main":
            return self.head
        return next((commit for commit in self.commits if commit.oid == revision), None)


class _HubError(Exception):
    def __init__(self, status: int, message: str, error_code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.error_code = status, message, error_code


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # keep pytest output clean
        pass

    # Dispatch

    def do_GET(self):
        self._dispatch(head=False)

    def do_HEAD(self):
        self._dispatch(head=True)

    def do_POST(self):
        self._dispatch(head=False)

    def _dispatch(self, head: bool):
        hub = self.server.hub
        try:
            url = urlsplit(self.path)
            parts = [unquote(p) for p in url.path.strip("/").split("/")]
            with hub.lock:
                hub.requests.append(f"{self.command} {url.path}")
                self._check_token()
                if self.command == "POST":
                    self._post(parts, self._read_body())
                elif parts[:2] == ["api", "models"]:
                    self._api_model(parts[2:], parse_qs(url.query))
                elif len(parts) >= 5 and parts[2] == "resolve":
                    self._resolve(f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]), head)
                else:
                    raise _HubError(404, f"no route for {self.command} {url.path}")
        except _HubError as error:
            self._send_json({"error": error.message}, error.status, error_code=error.error_code)

    def _check_token(self):
        header = self.headers.get("Authorization")
        if header is not None and header != f"Bearer {self.server.hub.token}":
            raise _HubError(401, "Invalid credentials in Authorization header")

    def _require_token(self):
        if self.headers.get("Authorization") is None:
            raise _HubError(401, "You must be authenticated to write")

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            raise _HubError(413, f"request body over {MAX_BODY_BYTES} bytes")
        return self.rfile.read(length)

    def _repo(self, repo_id: str) -> Repo:
        repo = self.server.hub.repos.get(repo_id)
        if repo is None or (repo.private and self.headers.get("Authorization") is None):
            raise _HubError(404, f"Repository not found: {repo_id}", "RepoNotFound")
        return repo

    # Writes

    def _post(self, parts: list[str], body: bytes):
        if parts == ["api", "validate-yaml"]:
            self._validate_yaml(json.loads(body))
            return
        self._require_token()
        if parts == ["api", "repos", "create"]:
            self._create_repo(json.loads(body))
        elif parts[:2] == ["api", "models"] and len(parts) >= 6 and parts[4] == "preupload":
            self._preupload(self._repo(f"{parts[2]}/{parts[3]}"), json.loads(body))
        elif parts[:2] == ["api", "models"] and len(parts) >= 6 and parts[4] == "commit":
            self._commit(self._repo(f"{parts[2]}/{parts[3]}"), "/".join(parts[5:]), body)
        else:
            raise _HubError(404, f"no route for POST /{'/'.join(parts)}")

    def _validate_yaml(self, payload: dict):
        text = payload.get("content", "")
        errors = []
        if text.startswith("---"):
            try:
                yaml.safe_load(text.split("---")[1])
            except yaml.YAMLError as error:
                errors.append({"message": str(error)})
        self._send_json({"errors": errors, "warnings": []}, 400 if errors else 200)

    def _create_repo(self, payload: dict):
        hub = self.server.hub
        repo_id = f"{payload.get('organization') or hub.user}/{payload['name']}"
        if repo_id in hub.repos:
            raise _HubError(409, "You already created this model repo")
        repo = Repo(repo_id, private=payload.get("visibility") == "private" or bool(payload.get("private")))
        gitattributes = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
        repo.commits.append(Commit(hub.new_oid(), "initial commit", {".gitattributes": gitattributes}))
        hub.repos[repo_id] = repo
        self._send_json({"url": f"{hub.url}/{repo_id}", "name": repo_id})

    def _preupload(self, repo: Repo, payload: dict):
        files = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in payload["files"]]
        self._send_json({"files": files, "commitOid": repo.head.oid})

    def _commit(self, repo: Repo, revision: str, body: bytes):
        if revision != "main":
            raise _HubError(400, "this test server commits to main only")
        tree = dict(repo.head.files)
        header = None
        for line in body.splitlines():
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                header = value
            elif key == "file" and value.get("encoding") == "base64":
                tree[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                tree.pop(value["path"], None)
            else:
                raise _HubError(400, f"unsupported commit operation {key!r} (only regular files are offered)")
        if header is None:
            raise _HubError(400, "commit payload has no header line")
        commit = Commit(self.server.hub.new_oid(), header["summary"], tree)
        repo.commits.append(commit)
        repo.commit_requests += 1
        hub_url = self.server.hub.url
        self._send_json(
            {"commitUrl": f"{hub_url}/{repo.repo_id}/commit/{commit.oid}", "commitOid": commit.oid}
            | {"pullRequestUrl": None}
        )

    # Reads

    def _api_model(self, parts: list[str], query: dict):
        repo = self._repo(f"{parts[0]}/{parts[1]}")
        rest = parts[2:]
        revision = rest[1] if len(rest) >= 2 and rest[0] in ("revision", "tree") else "main"
        commit = repo.at(revision)
        if commit is None:
            raise _HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        if not rest or rest[0] == "revision":
            siblings = [{"rfilename": path} for path in sorted(commit.files)]
            info = {"id": repo.repo_id, "modelId": repo.repo_id, "sha": commit.oid, "private": repo.private}
            self._send_json(info | {"siblings": siblings, "tags": [], "disabled": False, "gated": False})
        elif rest[0] == "tree":
            prefix = "/".join(rest[2:])
            entries = [
                {"type": "file", "oid": git_blob_sha1(content), "size": len(content), "path": path}
                for path, content in sorted(commit.files.items())
                if not prefix or path.startswith(prefix + "/")
            ]
            self._send_json(entries)
        else:
            raise _HubError(404, f"no route for /api/models/{'/'.join(parts)}")

    def _resolve(self, repo_id: str, revision: str, path: str, head: bool):
        repo = self._repo(repo_id)
        commit = repo.at(revision)
        if commit is None:
            raise _HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        if path not in commit.files:
            raise _HubError(404, f"Entry not found: {path}", "EntryNotFound")
        content = commit.files[path]
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(content)))
        self.send_header("ETag", f'"{git_blob_sha1(content)}"')
        self.send_header("X-Repo-Commit", commit.oid)
        self.end_headers()
        if not head:
            self.wfile.write(content)

    def _send_json(self, payload, status: int = 200, error_code: str | None = None):
        body = json.dumps(payload).encode()
        self.send_response(status, HTTPStatus(status).phrase)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if error_code:
            self.send_header("X-Error-Code", error_code)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, hub: "LoopbackHub"):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.hub = hub


class LoopbackHub:
    """A Hub-compatible server on 127.0.0.1 (random free port), for use as a context manager.

    Args:
        token (`str`): the only bearer token accepted.
        user (`str`): the namespace of repos created without an organization.
        lifetime_s (`float`): the server stops by itself after this long, whatever the test does.
    """

    def __init__(self, token: str, user: str = "tester", lifetime_s: float = 600):
        self.token, self.user, self.lifetime_s = token, user, lifetime_s
        self.repos: dict[str, Repo] = {}
        self.requests: list[str] = []
        self.lock = threading.Lock()
        self._count = 0
        self._server = _Server(self)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._stopper = threading.Timer(lifetime_s, self.stop)
        self._stopper.daemon = True

    def new_oid(self) -> str:
        self._count += 1
        return hashlib.sha1(f"commit {self._count}".encode()).hexdigest()

    def start(self) -> "LoopbackHub":
        self._thread.start()
        self._stopper.start()
        return self

    def stop(self) -> None:
        self._stopper.cancel()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "LoopbackHub":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
