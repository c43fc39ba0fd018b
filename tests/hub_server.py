"""A small in-memory Hugging Face Hub for tests, served on 127.0.0.1 in a thread.

It speaks the part of the Hub HTTP API that ``huggingface_hub`` 2.x uses to create a repo, commit
files and download them (read from ``huggingface_hub/hf_api.py``, ``_commit_api.py``,
``file_download.py`` and ``_snapshot_download.py``):

- ``POST /api/repos/create``, ``POST /api/{type}s/{repo}/branch/{branch}``
- ``GET /api/{type}s/{repo}[/revision/{rev}]`` (repo_info / model_info),
  ``GET /api/{type}s/{repo}/tree/{rev}[/{path}]`` (list_repo_tree, used by snapshot_download)
- ``POST /api/validate-yaml`` (create_commit validates README.md metadata first)
- ``POST /api/{type}s/{repo}/preupload/{rev}``: files matching ``HubServer.lfs_patterns``
  (``*.safetensors``, ``*.bin`` as in the Hub's default ``.gitattributes``) are "lfs", the rest
  "regular" (base64 in the commit payload); known files return their oid (sha256 for LFS, git blob
  sha1 otherwise), which is how the client skips unchanged files on a re-run
- the legacy git-LFS upload: ``POST /{repo}.git/info/lfs/objects/batch`` (basic transfer; no
  actions for content already stored), ``PUT /lfs/{oid}``, ``POST /lfs/verify``. The real Hub
  uses Xet storage when ``hf_xet`` is installed; tests set ``HF_HUB_DISABLE_XET`` so that the
  client takes this path
- ``POST /api/{type}s/{repo}/commit/{rev}[?create_pr=1]`` (NDJSON: header, ``file`` and
  ``lfsFile`` lines)
- ``HEAD|GET /{repo}/resolve/{rev}/{path}`` with ``X-Repo-Commit``, ``ETag`` (git blob sha1, or
  ``X-Linked-Etag`` = sha256 for LFS files) and ``Content-Length``, as ``hf_hub_download`` expects

Writes need ``Authorization: Bearer <token>`` with a token from ``HubServer.tokens``. Faults are
injected with ``server.fail[(METHOD, kind)] = 500`` (or ``"drop"`` to close the connection
without an answer, ``"drop-after"`` to do the work, then close without an answer, or ``"stall"`` to
send half the answer's body and then nothing until the server stops; with
``server.fail_times[(METHOD, kind)] = N`` only the next N times), where kind
is the endpoint name (``"commit"``, ``"preupload"``, ``"create"``, ``"tree"``, ``"resolve"``,
``"lfs-batch"``, ``"lfs-upload"``, ...). Every request is recorded in ``server.requests`` as
``(method, kind, path)``.
"""
import base64
import fnmatch
import hashlib
import json
import re
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, List, Optional, Tuple, Union
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

__all__ = ['HubServer', 'Commit', 'git_blob_oid', 'SilentServer', 'ErrorServer', 'closed_endpoint', 'point_at']

TEST_TOKEN = 'hf_test_token'  # the write token the tests' Hub accepts (tests/conftest.py's hub fixture)
GITATTRIBUTES = b'*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.bin filter=lfs diff=lfs merge=lfs -text\n'


def git_blob_oid(content: bytes) -> str:
    """The git object id of a blob, as the Hub reports it for regular files."""
    return hashlib.sha1(b'blob %d\0' % len(content) + content).hexdigest()


def _lfs_pointer(content: bytes) -> bytes:
    """The git-LFS pointer file that git stores in place of an LFS file."""
    return (f'version https://git-lfs.github.com/spec/v1\noid sha256:{hashlib.sha256(content).hexdigest()}\n'
            f'size {len(content)}\n').encode()


@dataclass
class Commit:
    oid: str
    parent: Optional[str]
    summary: str
    description: str
    files: Dict[str, bytes]  # the whole tree at this commit


@dataclass
class Repo:
    repo_id: str
    repo_type: str
    private: bool
    refs: Dict[str, str] = field(default_factory=dict)  # branch or refs/pr/N -> commit oid
    commits: Dict[str, Commit] = field(default_factory=dict)

    def resolve(self, revision: str) -> Optional[Commit]:
        oid = self.refs.get(revision, revision)
        return self.commits.get(oid)

    def new_commit(self, parent: Optional[Commit], summary: str, description: str, files: Dict[str, bytes]) -> Commit:
        seed = f'{self.repo_id}|{parent.oid if parent else ""}|{summary}|{len(self.commits)}'.encode()
        digest = hashlib.sha1(seed + b''.join(k.encode() + v for k, v in sorted(files.items()))).hexdigest()
        commit = Commit(digest, parent.oid if parent else None, summary, description, files)
        self.commits[digest] = commit
        return commit


class HubServer:
    """In-memory Hub; ``with HubServer() as hub: hub.endpoint`` is its base URL."""

    def __init__(self, tokens: Tuple[str, ...] = ('hf_test_token',), user: str = 'tester',
                 lfs_patterns: Tuple[str, ...] = ('*.safetensors', '*.bin')):
        self.tokens = set(tokens)
        self.user = user
        self.lfs_patterns = lfs_patterns
        self.lfs_store: Dict[str, bytes] = {}  # sha256 -> content uploaded through LFS
        self.repos: Dict[str, Repo] = {}
        self.requests: List[Tuple[str, str, str]] = []
        self.fail: Dict[Tuple[str, str], Union[int, str]] = {}
        self.fail_times: Dict[Tuple[str, str], int] = {}  # a fault with a count here is injected that many times
        self.lock = threading.Lock()
        self.stopping = threading.Event()  # ends the silence of 'stall' faults
        self._httpd = ThreadingHTTPServer(('127.0.0.1', 0), _make_handler(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name='hub-server', daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f'http://{host}:{port}'

    def start(self) -> 'HubServer':
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> 'HubServer':
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # what tests look at
    def files(self, repo_id: str, revision: str = 'main', repo_type: str = 'model') -> Dict[str, bytes]:
        return dict(self._repo(repo_id, repo_type).resolve(revision).files)

    def history(self, repo_id: str, revision: str = 'main', repo_type: str = 'model') -> List[Commit]:
        """Commits reachable from ``revision``, newest first (the first is the repo's creation)."""
        repo = self._repo(repo_id, repo_type)
        commit, out = repo.resolve(revision), []
        while commit is not None:
            out.append(commit)
            commit = repo.commits.get(commit.parent) if commit.parent else None
        return out

    def calls(self, kind: str) -> int:
        return sum(1 for _, k, _ in self.requests if k == kind)

    def is_lfs(self, path: str) -> bool:
        return any(fnmatch.fnmatch(path.rsplit('/', 1)[-1], pattern) for pattern in self.lfs_patterns)

    def _repo(self, repo_id: str, repo_type: str = 'model') -> Repo:
        return self.repos[f'{repo_type}s/{repo_id}']


_API = re.compile(
    r'^/api/(?P<type>models|datasets|spaces)/(?P<repo>[^/]+/[^/]+)'
    r'(?:/(?P<kind>revision|tree|preupload|commit|branch)(?:/(?P<rev>[^/]+)(?P<rest>/.*)?)?)?$')
_LFS_BATCH = re.compile(r'^/(?:(?:datasets|spaces)/)?[^/]+/[^/]+\.git/info/lfs/objects/batch$')
_LFS_UPLOAD = re.compile(r'^/lfs/(?P<oid>[0-9a-f]{64})$')
_RESOLVE = re.compile(r'^/(?:(?P<prefix>datasets|spaces)/)?(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$')


def _make_handler(hub: HubServer):

    class Handler(BaseHTTPRequestHandler):
        protocol_version = 'HTTP/1.1'

        def log_message(self, *args):  # keep test output quiet
            pass

        # plumbing
        def _send(self, status: int, body: Union[bytes, dict, list] = b'', headers: Optional[dict] = None,
                  head: bool = False) -> None:
            if hub.fail.get((self.command, self._kind)) == 'drop-after':  # the answer is lost
                self.close_connection = True
                self.connection.shutdown(2)
                return
            if not isinstance(body, bytes):
                body = json.dumps(body).encode()
                headers = {'Content-Type': 'application/json', **(headers or {})}
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header('Content-Length', str(len(body)))
            self.end_headers()
            if not head and hub.fail.get((self.command, self._kind)) == 'stall' and len(body) > 1:
                self.wfile.write(body[:len(body) // 2])  # half the body, then silence until the Hub stops
                self.wfile.flush()
                hub.stopping.wait(60)
                self.close_connection = True
            elif not head:
                self.wfile.write(body)

        def _error(self, status: int, code: Optional[str], message: str, headers: Optional[dict] = None,
                   head: bool = False, body_extra: Optional[dict] = None) -> None:
            headers = dict(headers or {})
            if code:
                headers['X-Error-Code'] = code
            headers['X-Error-Message'] = message
            self._send(status, {'error': message, **(body_extra or {})}, headers, head=head)

        def _body(self) -> bytes:
            if self.headers.get('Transfer-Encoding', '').lower() == 'chunked':  # streamed file uploads
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b';')[0], 16)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                    if size == 0:
                        return b''.join(chunks)
            return self.rfile.read(int(self.headers.get('Content-Length') or 0))

        def _authorized(self) -> bool:
            auth = self.headers.get('Authorization', '')
            return auth.startswith('Bearer ') and auth[len('Bearer '):] in hub.tokens

        def _injected(self, kind: str) -> bool:
            fault = hub.fail.get((self.command, kind))
            if fault is None or fault in ('drop-after', 'stall'):
                return False
            with hub.lock:
                if (self.command, kind) in hub.fail_times:
                    hub.fail_times[(self.command, kind)] -= 1
                    if hub.fail_times[(self.command, kind)] <= 0:
                        del hub.fail_times[(self.command, kind)], hub.fail[(self.command, kind)]
            self._body()
            if fault == 'drop':
                self.close_connection = True
                self.connection.shutdown(2)  # no status line: the client sees the connection drop
            else:
                self._error(int(fault), None, f'injected failure on {kind}')
            return True

        def _route(self) -> Tuple[str, Optional[re.Match]]:
            path = urlsplit(self.path).path
            if path == '/api/repos/create':
                return 'create', None
            if path == '/api/validate-yaml':
                return 'validate-yaml', None
            if path == '/lfs/verify':
                return 'lfs-verify', None
            if _LFS_BATCH.match(path):
                return 'lfs-batch', None
            m = _LFS_UPLOAD.match(path)
            if m:
                return 'lfs-upload', m
            m = _API.match(path)
            if m:
                return m.group('kind') or 'info', m
            m = _RESOLVE.match(path)
            if m:
                return 'resolve', m
            return 'unknown', None

        def _dispatch(self) -> None:
            kind, m = self._route()
            self._kind = kind
            with hub.lock:
                hub.requests.append((self.command, kind, self.path))
            if self._injected(kind):
                return
            handler = getattr(self, f'_{self.command.lower()}_{kind.replace("-", "_")}', None)
            if handler is None:
                self._body()
                return self._error(404, None, f'{self.command} {self.path} is not served by the test Hub')
            with hub.lock:
                handler(m)

        do_GET = do_POST = do_HEAD = do_PUT = _dispatch

        def _find(self, m: re.Match, head: bool = False) -> Optional[Repo]:
            repo_type = m.groupdict().get('type') or (m.groupdict().get('prefix') or 'models')
            repo = hub.repos.get(f'{repo_type}/{m.group("repo")}')
            if repo is None or (repo.private and not self._authorized()):
                self._error(404, 'RepoNotFound', 'Repository not found', head=head)
                return None
            return repo

        def _write_access(self) -> bool:
            if not self._authorized():
                self._error(401, None, 'Invalid credentials in Authorization header')
                return False
            return True

        # endpoints
        def _post_create(self, m) -> None:
            payload = json.loads(self._body())
            if not self._write_access():
                return
            repo_type = payload.get('type') or 'model'
            repo_id = f'{payload.get("organization") or hub.user}/{payload["name"]}'
            key = f'{repo_type}s/{repo_id}'
            if key in hub.repos:
                return self._error(409, None, 'You already created this model repo',
                                   body_extra={'url': f'{hub.endpoint}/{repo_id}'})
            repo = Repo(repo_id, repo_type, private=payload.get('visibility') == 'private')
            repo.refs['main'] = repo.new_commit(None, 'initial commit', '', {'.gitattributes': GITATTRIBUTES}).oid
            hub.repos[key] = repo
            self._send(200, {'url': f'{hub.endpoint}/{repo_id}', 'name': repo_id})

        def _post_branch(self, m) -> None:
            payload = json.loads(self._body() or b'{}')
            if not self._write_access() or (repo := self._find(m)) is None:
                return
            branch = unquote(m.group('rev'))
            if branch in repo.refs:
                return self._error(409, None, f'Reference {branch} already exists')
            start = repo.resolve(payload.get('startingPoint') or 'main')
            repo.refs[branch] = start.oid
            self._send(200, {})

        def _info(self, repo: Repo, commit: Commit) -> dict:
            return {
                'id': repo.repo_id, 'modelId': repo.repo_id, 'sha': commit.oid, 'private': repo.private,
                'siblings': [{'rfilename': name} for name in sorted(commit.files)],
                'lastModified': '2026-01-01T00:00:00.000Z', 'tags': [], 'downloads': 0, 'likes': 0,
            }

        def _get_info(self, m) -> None:
            if (repo := self._find(m)) is not None:
                self._send(200, self._info(repo, repo.resolve('main')))

        def _get_revision(self, m) -> None:
            if (repo := self._find(m)) is None:
                return
            commit = repo.resolve(unquote(m.group('rev')))
            if commit is None:
                return self._error(404, 'RevisionNotFound', 'Invalid rev id')
            self._send(200, self._info(repo, commit))

        def _tree_entry(self, name: str, content: bytes) -> dict:
            if not hub.is_lfs(name):
                return {'type': 'file', 'oid': git_blob_oid(content), 'size': len(content), 'path': name}
            pointer = _lfs_pointer(content)
            lfs = {'oid': hashlib.sha256(content).hexdigest(), 'size': len(content), 'pointerSize': len(pointer)}
            return {'type': 'file', 'oid': git_blob_oid(pointer), 'size': len(content), 'path': name, 'lfs': lfs}

        def _get_tree(self, m) -> None:
            if (repo := self._find(m)) is None:
                return
            commit = repo.resolve(unquote(m.group('rev')))
            if commit is None:
                return self._error(404, 'RevisionNotFound', 'Invalid rev id')
            prefix = unquote(m.group('rest') or '/').strip('/')
            recursive = parse_qs(urlsplit(self.path).query).get('recursive', ['False'])[0].lower() == 'true'
            entries, folders = [], set()
            for name, content in sorted(commit.files.items()):
                if prefix and not name.startswith(prefix + '/'):
                    continue
                rel = name[len(prefix) + 1:] if prefix else name
                if '/' in rel and not recursive:
                    folders.add((prefix + '/' if prefix else '') + rel.split('/')[0])
                    continue
                entries.append(self._tree_entry(name, content))
            entries += [{'type': 'directory', 'oid': '0' * 40, 'size': 0, 'path': f} for f in sorted(folders)]
            self._send(200, entries)

        def _post_validate_yaml(self, m) -> None:
            content = json.loads(self._body())['content']
            header = re.match(r'^---\n(.*?)\n---\n', content, re.S)
            try:
                if header is not None and not isinstance(yaml.safe_load(header.group(1)) or {}, dict):
                    raise yaml.YAMLError('metadata is not a mapping')
            except yaml.YAMLError as e:
                return self._send(400, {'errors': [{'message': str(e)}], 'warnings': []})
            self._send(200, {'errors': [], 'warnings': []})

        def _post_preupload(self, m) -> None:
            payload = json.loads(self._body())
            if not self._write_access() or (repo := self._find(m)) is None:
                return
            commit = repo.resolve(unquote(m.group('rev')))
            files = commit.files if commit is not None else {}

            def oid(path: str) -> Optional[str]:
                if path not in files:
                    return None
                return hashlib.sha256(files[path]).hexdigest() if hub.is_lfs(path) else git_blob_oid(files[path])

            self._send(200, {'files': [
                {'path': f['path'], 'uploadMode': 'lfs' if hub.is_lfs(f['path']) else 'regular',
                 'shouldIgnore': False, 'oid': oid(f['path'])}
                for f in payload['files']]})

        def _post_lfs_batch(self, m) -> None:
            payload = json.loads(self._body())
            if not self._write_access():
                return
            objects = []
            for obj in payload['objects']:
                entry = {'oid': obj['oid'], 'size': obj['size']}
                if obj['oid'] not in hub.lfs_store:  # stored content needs no upload action
                    entry['actions'] = {'upload': {'href': f'{hub.endpoint}/lfs/{obj["oid"]}'},
                                        'verify': {'href': f'{hub.endpoint}/lfs/verify'}}
                objects.append(entry)
            self._send(200, {'transfer': 'basic', 'objects': objects})

        def _put_lfs_upload(self, m) -> None:
            content = self._body()
            if hashlib.sha256(content).hexdigest() != m.group('oid'):
                return self._error(400, None, 'content does not match its sha256')
            hub.lfs_store[m.group('oid')] = content
            self._send(200, {})

        def _post_lfs_verify(self, m) -> None:
            obj = json.loads(self._body())
            if len(hub.lfs_store.get(obj['oid'], b'')) != obj['size'] or obj['oid'] not in hub.lfs_store:
                return self._error(404, None, f'LFS object {obj["oid"]} was not uploaded')
            self._send(200, {})

        def _post_commit(self, m) -> None:
            lines = [json.loads(line) for line in self._body().splitlines() if line.strip()]
            if not self._write_access() or (repo := self._find(m)) is None:
                return
            revision = unquote(m.group('rev'))
            parent = repo.resolve(revision)
            if parent is None:
                return self._error(404, 'RevisionNotFound', f'Invalid rev id: {revision}')
            header = next(line['value'] for line in lines if line['key'] == 'header')
            files = dict(parent.files)
            for line in lines:
                value = line['value']
                if line['key'] == 'file':
                    files[value['path']] = base64.b64decode(value['content'])
                elif line['key'] == 'lfsFile':
                    if value['oid'] not in hub.lfs_store:
                        return self._error(
                            400, None, f'LFS object {value["oid"]} of {value["path"]} was never uploaded')
                    files[value['path']] = hub.lfs_store[value['oid']]
                elif line['key'] == 'deletedFile':
                    files.pop(value['path'], None)
                elif line['key'] == 'deletedFolder':
                    files = {k: v for k, v in files.items() if not k.startswith(value['path'].rstrip('/') + '/')}
                elif line['key'] != 'header':
                    return self._error(400, None, f'the test Hub does not take {line["key"]!r} operations')
            commit = repo.new_commit(parent, header['summary'], header.get('description', ''), files)
            pr_url = None
            if parse_qs(urlsplit(self.path).query).get('create_pr') == ['1']:
                number = 1 + sum(ref.startswith('refs/pr/') for ref in repo.refs)
                repo.refs[f'refs/pr/{number}'] = commit.oid
                pr_url = f'{hub.endpoint}/{repo.repo_id}/discussions/{number}'
            else:
                repo.refs[revision if revision in repo.refs else 'main'] = commit.oid
            self._send(200, {'commitUrl': f'{hub.endpoint}/{repo.repo_id}/commit/{commit.oid}',
                             'commitOid': commit.oid, 'pullRequestUrl': pr_url, 'success': True})

        def _resolve(self, m, head: bool) -> None:
            if (repo := self._find(m, head=head)) is None:
                return
            commit = repo.resolve(unquote(m.group('rev')))
            if commit is None:
                return self._error(404, 'RevisionNotFound', 'Invalid rev id', head=head)
            path = unquote(m.group('path'))
            if path not in commit.files:
                return self._error(
                    404, 'EntryNotFound', f'{path} does not exist', {'X-Repo-Commit': commit.oid}, head=head)
            content = commit.files[path]
            headers = {'X-Repo-Commit': commit.oid, 'ETag': f'"{git_blob_oid(content)}"',
                       'Content-Type': 'application/octet-stream'}
            if hub.is_lfs(path):  # the Hub names LFS content by its sha256
                headers.update({'ETag': f'"{git_blob_oid(_lfs_pointer(content))}"',
                                'X-Linked-Etag': f'"{hashlib.sha256(content).hexdigest()}"',
                                'X-Linked-Size': str(len(content))})
            self._send(200, content, headers, head=head)

        def _get_resolve(self, m) -> None:
            self._resolve(m, head=False)

        def _head_resolve(self, m) -> None:
            self._resolve(m, head=True)

    return Handler


class SilentServer:
    """Accepts TCP connections and never answers: a Hub that hangs. ``with SilentServer() as s: s.endpoint``."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(('127.0.0.1', 0))
        self.sock.listen(64)
        self.endpoint = f'http://127.0.0.1:{self.sock.getsockname()[1]}'
        self.conns: List[socket.socket] = []
        self.accepted = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            self.conns.append(conn)  # held open, never read or answered

    def close(self) -> None:
        for conn in self.conns:
            conn.close()
        self.sock.close()

    def __enter__(self) -> 'SilentServer':
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ErrorServer:
    """Answers every request with ``status`` (default 500): a Hub that is up but failing."""

    def __init__(self, status: int = 500):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = 'HTTP/1.1'

            def log_message(self, *args):
                pass

            def _fail(self):
                server.requests += 1
                self.rfile.read(int(self.headers.get('Content-Length') or 0))
                body = b'{"error": "injected failure"}'
                self.send_response(status)
                self.send_header('Content-Type', 'application/json')
                self.send_header('Content-Length', str(len(body)))
                self.end_headers()
                if self.command != 'HEAD':
                    self.wfile.write(body)

            do_GET = do_POST = do_HEAD = do_PUT = _fail

        self.requests = 0
        self._httpd = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        host, port = self._httpd.server_address[:2]
        self.endpoint = f'http://{host}:{port}'

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> 'ErrorServer':
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def closed_endpoint() -> str:
    """The URL of a local port nothing listens on (bound, then released)."""
    sock = socket.socket()
    sock.bind(('127.0.0.1', 0))
    port = sock.getsockname()[1]
    sock.close()
    return f'http://127.0.0.1:{port}'


def point_at(monkeypatch, endpoint: str, cache_dir) -> None:
    """Point huggingface_hub, timm's ``hf-hub:`` and datasets at ``endpoint`` with an empty cache, as
    ``HF_ENDPOINT`` / ``HF_HUB_CACHE`` would at import time."""
    import datasets
    from huggingface_hub import constants

    monkeypatch.setattr(constants, 'ENDPOINT', endpoint)
    monkeypatch.setattr(constants, 'HUGGINGFACE_CO_URL_TEMPLATE', endpoint + '/{repo_id}/resolve/{revision}/{filename}')
    monkeypatch.setattr(constants, 'HF_HUB_CACHE', str(cache_dir))
    monkeypatch.setattr(datasets.config, 'HF_ENDPOINT', endpoint)
    monkeypatch.setattr(datasets.config, 'HUB_DATASETS_URL', endpoint + '/datasets/{repo_id}/resolve/{revision}/{path}')
    monkeypatch.setattr(datasets.config, 'HF_DATASETS_CACHE', str(cache_dir) + '-datasets')
    # the test Hubs speak git-LFS, not Xet, for *.safetensors (see the module docstring)
    monkeypatch.setattr(constants, 'HF_HUB_DISABLE_XET', True)
