"""``einderiv serve``: a local web page (and its JSON API) for deriving, checking and exporting.

:class:`Server` serves ``static/`` (the page, and KaTeX to render the mathematics without a
network) and ``/api/diff``, ``/api/check`` and ``/api/examples``; the work runs in worker
processes under a time limit (:mod:`einderiv.serve.workers`).
"""

from __future__ import annotations

import sys
import webbrowser

from .server import TIME_LIMIT, Server, is_loopback

__all__ = ["Server", "serve"]


def serve(
    host: str = "127.0.0.1", port: int = 8000, *, open_browser: bool = False, time_limit=TIME_LIMIT, workers=None
) -> int:
    """Serve the page until Ctrl-C; print its address (and a warning off the loopback address)."""
    try:
        server = Server(host, port, time_limit=time_limit, workers=workers)
    except OSError as err:
        print(f"error: cannot listen on {host}:{port} ({err.strerror or err})", file=sys.stderr)
        return 2
    server.quiet = False
    try:
        if not is_loopback(host):  # said before the address, which scripts wait for
            print(
                f"warning: listening on {host}, not 127.0.0.1: the page and its API are reachable from other machines",
                file=sys.stderr,
                flush=True,
            )
        print(f"einderiv serve: {server.url} (Ctrl-C stops it)", flush=True)
        if open_browser:
            webbrowser.open(server.url)
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
    finally:
        server.server_close()
        server.workers.close()
    return 0
