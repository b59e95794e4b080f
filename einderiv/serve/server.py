"""The HTTP server: the page's static files and the JSON API, on the standard library's
``http.server`` (one thread per connection; the work itself runs in worker processes)."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import socket
import threading
import urllib.parse
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from ..errors import EinderivError
from .answers import Query, QueryError, read_query
from .examples import EXAMPLES
from .workers import MEMORY_LIMIT, TimeLimit, Unavailable, Workers

STATIC = Path(__file__).resolve().parent / "static"
TIME_LIMIT = 10.0  # seconds of work per request
MAX_URL = 60_000  # characters of a request's path and query (an expression of MAX_EXPR, URL-encoded)
MAX_BODY = 65_536  # bytes of a POST body
SOCKET_TIMEOUT = 30.0  # seconds a connection may wait for the next bytes of a request
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".woff2": "font/woff2",
    ".png": "image/png",
    ".svg": "image/svg+xml",
    "": "text/plain; charset=utf-8",  # LICENSE
}
POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; font-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)


def is_loopback(host: str) -> bool:
    """``localhost``, or a loopback address (127.0.0.0/8, ::1): this machine only."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def static_files(root: Path = STATIC) -> dict[str, tuple[bytes, str]]:
    """URL path -> (content, content type) for every file of the page (read once: nothing else
    on disk is ever served)."""
    files = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.suffix in TYPES:
            files["/" + path.relative_to(root).as_posix()] = (path.read_bytes(), TYPES[path.suffix])
    files["/"] = files["/index.html"]
    return files


class Server(ThreadingHTTPServer):
    """The page and its API at ``url``; :meth:`close` stops it and its workers.  Each request's
    work has ``time_limit`` seconds, and each worker ``memory_limit`` bytes of address space
    beyond what it holds when ready (None: no limit); a connection that sends nothing for
    ``socket_timeout`` seconds is closed."""

    daemon_threads = True
    block_on_close = False

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 8000,
        *,
        time_limit: float = TIME_LIMIT,
        workers=None,
        socket_timeout: float = SOCKET_TIMEOUT,
        memory_limit: int | None = MEMORY_LIMIT,
    ):
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.time_limit = time_limit
        self.socket_timeout = socket_timeout
        self.loopback_only = is_loopback(host)
        self.files = static_files()
        self.examples = json.dumps([example.json() for example in EXAMPLES], ensure_ascii=False).encode()
        self.quiet = True
        super().__init__((host, port), Handler)  # bind first: a port in use fails before workers start
        try:
            self.workers = Workers(workers or min(4, os.cpu_count() or 1), time_limit, memory_limit=memory_limit)
        except BaseException:
            self.server_close()
            raise
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"

    def start(self) -> Server:
        """Serve in a background thread (tests, benchmarks); returns self."""
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()
        return self

    def close(self) -> None:
        if self.thread is not None:
            self.shutdown()
        self.server_close()
        self.workers.close()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def work(self, query: Query) -> tuple[int, dict]:
        try:
            return self.workers.run(dataclasses.asdict(query))
        except TimeLimit:
            return 503, {
                "error": f"stopped after the time limit of {self.time_limit:g} s: the derivative grows too large to "
                "work out here (a lower order, or intermediates named in statements of their own, may help)",
                "line": None,
                "column": None,
                "limit": "time",
            }
        except Unavailable as err:
            return 503, {"error": f"the server cannot take this request now: {err}", "line": None, "column": None}


class Handler(BaseHTTPRequestHandler):
    server: Server
    server_version = "einderiv"
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms wait for a delayed ACK

    def setup(self) -> None:
        # a client that stops sending (a request line, headers or a body short of its
        # Content-Length) or keeps an idle connection open holds a thread only this long
        self.timeout = self.server.socket_timeout
        super().setup()

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if not self._admitted():
            return
        path, _, query = self.path.partition("?")
        if path.startswith("/api/"):
            self._api(path, query)
        elif path in self.server.files:
            content, kind = self.server.files[path]
            self._send(200, content, kind, cache="no-cache")
        else:
            self._error(404, f"not found: {path[:100]}")

    def do_POST(self) -> None:  # noqa: N802
        if not self._admitted():
            return
        path = self.path.partition("?")[0]
        if path not in ("/api/diff", "/api/check"):
            status = 405 if path.startswith("/api/") else 404
            self._error(status, f"POST goes to /api/diff or /api/check, not {path[:100]}")
            return
        length = self.headers.get("Content-Length", "")
        if not length.isdigit():
            self._error(411, "a POST needs a Content-Length")
            return
        if int(length) > MAX_BODY:
            self.close_connection = True  # the body is not read
            self._error(413, f"the body is {length} bytes, over the limit of {MAX_BODY}")
            return
        try:
            body = self.rfile.read(int(length))
        except TimeoutError:
            self.close_connection = True
            self._error(408, f"the body of {length} bytes did not arrive within {self.server.socket_timeout:g} s")
            return
        if len(body) < int(length):  # the client closed its side early
            self.close_connection = True
            self._error(400, f"the body is {len(body)} bytes, short of its Content-Length of {length}")
            return
        kind = self.headers.get("Content-Type", "").split(";")[0].strip()
        try:
            if kind == "application/json":
                fields = _json_fields(json.loads(body))
            else:
                fields = urllib.parse.parse_qs(body.decode(), keep_blank_values=True, max_num_fields=100)
        except (ValueError, UnicodeDecodeError) as err:
            self._error(400, f"the body is neither JSON nor a form: {err}")
            return
        except RecursionError:  # JSON nested thousands deep
            self._error(400, "the body is JSON nested too deeply")
            return
        self._answer(path.removeprefix("/api/"), fields)

    def _admitted(self) -> bool:
        """Refuse long URLs; (on a loopback address) Host names other than the loopback's, which
        a web page elsewhere could make a browser send (DNS rebinding); and requests a page of
        another site makes a browser send here: those its ``Sec-Fetch-Site`` says come from
        another site (but a link followed to the page itself, whose state is in its URL), and
        those whose ``Origin`` is not this server's own."""
        if len(self.path) > MAX_URL:
            self._error(414, f"the URL is {len(self.path)} characters long, over the limit of {MAX_URL}")
            return False
        host = self.headers.get("Host", "")
        if self.server.loopback_only:
            name = host[1:].partition("]")[0] if host.startswith("[") else host.rpartition(":")[0] or host
            if not is_loopback(name):
                self._error(403, f"this server answers to {self.server.url} only, not to Host {host[:100]!r}")
                return False
        site = self.headers.get("Sec-Fetch-Site", "").lower()
        followed = (
            self.headers.get("Sec-Fetch-Mode", "").lower() == "navigate"
            and self.headers.get("Sec-Fetch-Dest", "document").lower() == "document"
            and not self.path.startswith("/api/")
        )
        if site in ("cross-site", "same-site") and not followed:
            self._error(403, f"a request from another site ({site}) is refused: open {self.server.url} itself")
            return False
        origin = self.headers.get("Origin")
        if origin is not None and origin.lower() != f"http://{host}".lower():
            self._error(403, f"a request from the page {origin[:100]!r} is refused: open {self.server.url} itself")
            return False
        return True

    def _api(self, path: str, query: str) -> None:
        if path == "/api/examples":
            self._send(200, self.server.examples, "application/json; charset=utf-8")
            return
        if path not in ("/api/diff", "/api/check"):
            self._error(404, f"no API {path[:100]} (there are /api/diff, /api/check and /api/examples)")
            return
        try:
            fields = urllib.parse.parse_qs(query, keep_blank_values=True, max_num_fields=100, errors="strict")
        except (ValueError, UnicodeDecodeError) as err:
            self._error(400, f"the query cannot be read: {err}")
            return
        self._answer(path.removeprefix("/api/"), fields)

    def _answer(self, kind: str, fields: dict[str, list[str]]) -> None:
        try:
            query = read_query(kind, fields)
        except QueryError as err:
            self._error(err.status, str(err))
            return
        except (EinderivError, ValueError) as err:  # an EinderivError of a shape option, say
            self._error(400, str(err).splitlines()[0])
            return
        except Exception as err:  # noqa: BLE001 - a bug: reported as such, and the server serves on
            self._error(500, f"internal error ({type(err).__name__}: {err}); please report this")
            return
        status, payload = self.server.work(query)
        self._json(status, payload)

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": message, "line": None, "column": None})

    def _json(self, status: int, payload: dict) -> None:
        body = json.dumps(payload, ensure_ascii=False, allow_nan=False).encode()
        self._send(status, body, "application/json; charset=utf-8")

    def _send(self, status: int, body: bytes, kind: str, cache: str = "no-store") -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Security-Policy", POLICY)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cache-Control", cache)
        self.end_headers()
        self.wfile.write(body)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own errors (a malformed request, 501 for other methods), as JSON."""
        self.close_connection = True
        try:
            self._error(code, message or HTTPStatus(code).phrase)
        except (OSError, ValueError):
            pass

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - http.server's signature
        if not self.server.quiet:
            super().log_message(format, *args)


def _json_fields(data) -> dict[str, list[str]]:
    """A JSON object's fields as the query's lists of strings (``{"wrt": ["x", "x"]}``)."""
    if not isinstance(data, dict):
        raise ValueError("the JSON body must be an object")
    fields = {}
    for name, value in data.items():
        values = value if isinstance(value, list) else [value]
        if not all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in values):
            raise ValueError(f"{name}: give text, a number or a list of them")
        for text in (name, *(v for v in values if isinstance(v, str))):
            lone = next((c for c in text if 0xD800 <= ord(c) <= 0xDFFF), None)
            if lone is not None:  # "\ud800" escaped alone is no character (it ended the worker twice)
                raise ValueError(f"{str(name)[:40]!r} holds a lone surrogate, \\u{ord(lone):04x}: no character")
        fields[str(name)] = [str(v) for v in values]
    return fields
