"""Response times of ``einderiv serve``'s API for the page's examples (``python -m benchmarks.serve``).

A server is started on a free port of 127.0.0.1, with its worker processes; for each example,
``/api/diff`` and ``/api/check`` are asked ``--repeats`` times each over one kept-alive
connection, as the page asks them, and the table gives the first (cold) response and the median
and 90th percentile of the rest, measured by the client (HTTP, JSON and the worker included).
Nothing here is asserted about speed; the tests run it with ``--quick`` for correctness only.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import statistics
import time
import urllib.parse

import einderiv
from benchmarks.run import format_seconds
from einderiv.serve import Server
from einderiv.serve.examples import EXAMPLES


def timed(connection: http.client.HTTPConnection, path: str) -> float:
    """Seconds from sending the request to the whole JSON answer read; it must be a 200."""
    started = time.perf_counter()
    connection.request("GET", path)
    response = connection.getresponse()
    body = response.read()
    elapsed = time.perf_counter() - started
    if response.status != 200:
        raise RuntimeError(f"{path}: {response.status} {body[:200]!r}")
    json.loads(body)
    return elapsed


def measure(server: Server, repeats: int) -> list[dict]:
    host, port = server.server_address[:2]
    rows = []
    for example in EXAMPLES:
        row = {"example": example.title}
        connection = http.client.HTTPConnection(host, port, timeout=60)
        try:
            for kind in ("diff", "check"):
                path = f"/api/{kind}?" + urllib.parse.urlencode(example.query(kind), doseq=True)
                times = [timed(connection, path) for _ in range(repeats)]
                rest = sorted(times[1:]) or times
                row[f"{kind}_first"] = times[0]
                row[f"{kind}_median"] = statistics.median(rest)
                row[f"{kind}_p90"] = rest[min(len(rest) - 1, int(0.9 * len(rest)))]
        finally:
            connection.close()
        rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        "| example | diff: first | diff: median | diff: p90 | check: first | check: median | check: p90 |",
        "|" + " --- |" * 7,
    ]
    for r in rows:
        cells = [
            format_seconds(r[f"{kind}_{what}"]) for kind in ("diff", "check") for what in ("first", "median", "p90")
        ]
        lines.append(f"| {r['example']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.serve", description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=21, help="requests per example and API (default 21)")
    parser.add_argument("--quick", action="store_true", help="two requests each: checks everything, times little")
    parser.add_argument("--workers", type=int, default=None, help="worker processes (default: the server's)")
    parser.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    args = parser.parse_args(argv)
    repeats = 2 if args.quick else max(2, args.repeats)
    with Server("127.0.0.1", 0, workers=args.workers).start() as server:
        rows = measure(server, repeats)
        workers = server.workers.size
    medians = [r["diff_median"] for r in rows] + [r["check_median"] for r in rows]
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    print(f"einderiv {einderiv.__version__}: einderiv serve's API, {repeats} requests per example and API on {machine}")
    print(f"(one kept-alive connection per example; {workers} worker processes; first = cold, then median and p90)")
    print(table(rows))
    print(f"largest median: {format_seconds(max(medians))}; median of the medians: "
          f"{format_seconds(statistics.median(medians))}")  # fmt: skip
    if args.json:
        with open(args.json, "w") as file:
            json.dump({"repeats": repeats, "rows": rows}, file, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
