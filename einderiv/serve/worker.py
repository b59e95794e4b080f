"""``python -m einderiv.serve.worker``: a worker process of ``einderiv serve``.

It writes ``ready``, then reads one query per line on stdin (the JSON of an
:class:`~einderiv.serve.answers.Query`) and writes ``[status, payload]`` per line on stdout,
until stdin closes.  Nothing else reaches that stdout: ``print`` (and any write to file
descriptor 1) goes to stderr.
"""

from __future__ import annotations

import json
import os
import signal
import sys

from .answers import Query, answer


def main() -> None:
    if hasattr(signal, "SIGINT"):
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server stops us; a terminal's Ctrl-C is its
    out = os.fdopen(os.dup(1), "wb")  # the answers' channel; fd 1 itself (C libraries too) goes to stderr
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    out.write(b"ready\n")
    out.flush()
    for line in sys.stdin.buffer:
        try:
            status, payload = answer(Query.from_json(json.loads(line)))
            text = json.dumps([status, payload], ensure_ascii=False, allow_nan=False)
        except Exception as err:  # noqa: BLE001 - a bug here must not stop the worker
            text = json.dumps([500, {"error": f"internal error ({type(err).__name__}); please report this"}])
        out.write(text.encode() + b"\n")
        out.flush()


if __name__ == "__main__":
    main()
