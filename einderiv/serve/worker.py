"""``python -m einderiv.serve.worker [--memory=BYTES]``: a worker process of ``einderiv serve``.

It writes ``ready``, then reads one query per line on stdin (the JSON of an
:class:`~einderiv.serve.answers.Query`) and writes ``[status, payload]`` per line on stdout,
until stdin closes, or its parent (the server) is gone.  Nothing else reaches that stdout:
``print`` (and any write to file descriptor 1) goes to stderr.  With ``--memory``, its address
space is capped at what it holds when ready plus that many bytes: work that needs more ends in
a MemoryError, answered as such (the server then replaces the worker).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time

from .answers import Query, answer


def limit_memory(budget: int) -> int | None:
    """Cap the address space at its present size plus ``budget`` bytes (RLIMIT_AS); the cap, or
    None where the platform has no such limit or does not say how large the process is."""
    try:
        import resource  # noqa: PLC0415 - POSIX only

        with open("/proc/self/statm") as file:  # Linux: the first field is the size in pages
            size = int(file.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (ImportError, OSError, ValueError):
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = size + budget
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    if soft != resource.RLIM_INFINITY and soft <= cap:
        return soft  # already as strict
    try:
        resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    except (ValueError, OSError):
        return None
    return cap


def watch_parent(interval: float = 1.0) -> None:
    """Exit when the server is gone (this process handed to another parent), also in the middle
    of work: stdin closes then too, but is read only between queries."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    budget = next((int(a.partition("=")[2]) for a in args if a.startswith("--memory=")), None)
    if hasattr(signal, "SIGINT"):
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server stops us; a terminal's Ctrl-C is its
    if os.name == "posix":
        watch_parent()
    out = os.fdopen(os.dup(1), "wb")  # the answers' channel; fd 1 itself (C libraries too) goes to stderr
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    if budget:
        limit_memory(budget)
    out.write(b"ready\n")
    out.flush()
    for line in sys.stdin.buffer:
        try:
            status, payload = answer(Query.from_json(json.loads(line)))
            text = json.dumps([status, payload], ensure_ascii=False, allow_nan=False)
        except MemoryError:
            text = json.dumps(
                [503, {"error": "the worker ran out of memory", "line": None, "column": None, "limit": "memory"}]
            )
        except Exception as err:  # noqa: BLE001 - a bug here must not stop the worker
            text = json.dumps(
                [
                    500,
                    {
                        "error": f"internal error ({type(err).__name__}); please report this",
                        "line": None,
                        "column": None,
                    },
                ]
            )
        out.write(text.encode() + b"\n")
        out.flush()


if __name__ == "__main__":
    main()
