"""A few worker processes that run the API's work, each request under a time limit.

A thread cannot be stopped in Python, a process can: a worker that overruns the limit is killed
and a fresh one started in its place (in the background, so that the next request goes to a
worker that is ready), and the server goes on serving.  A worker is ``python -m
einderiv.serve.worker``, which reads one JSON query per line on its stdin and writes one JSON
answer per line (:mod:`einderiv.serve.worker`): no pickles, and nothing of the server's own
``__main__`` is imported again, as multiprocessing's spawn would.
"""

from __future__ import annotations

import json
import os
import queue
import site
import subprocess
import sys
import threading
from pathlib import Path

START_TIMEOUT = 120.0  # seconds a new worker may take to import einderiv
PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])  # where this einderiv is imported from
#: the workers' current directory: a folder of the package without Python modules (Python 3.10
#: puts it first on sys.path; 3.11 and later leave it off, as PYTHONSAFEPATH says)
WORKER_DIRECTORY = str(Path(__file__).resolve().parent / "static")
MEMORY_LIMIT = 2 << 30  # bytes of address space a worker may take beyond what it holds when ready


class TimeLimit(Exception):
    """The work ran past the time limit; its worker was stopped."""


class Unavailable(Exception):
    """No worker could take the work (all busy past the wait, a worker died, or closed)."""


class Ended(Unavailable):
    """The worker given the work ended without an answer (it is replaced)."""


def worker_environment(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a worker: the server's, with ``PYTHONSAFEPATH`` (nothing of the current
    directory is imported), and ``PYTHONPATH`` made absolute (the worker runs elsewhere) with
    this einderiv's source tree first, unless it is installed (its folder is a site-packages,
    which is on the path already, and on PYTHONPATH would come before the standard library)."""
    environ = dict(os.environ if environ is None else environ)
    given = [os.path.abspath(p) for p in environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    sites = [*site.getsitepackages(), site.getusersitepackages()] if hasattr(site, "getsitepackages") else []
    installed = os.path.realpath(PACKAGE_ROOT) in {os.path.realpath(p) for p in sites}
    path = given if installed or PACKAGE_ROOT in given else [PACKAGE_ROOT, *given]
    environ.pop("PYTHONPATH", None)
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        # a check's arrays are small (see answers.MAX_ENTRIES): one BLAS thread each, and no
        # thread buffers, per CPU, of a BLAS library's in the address space MEMORY_LIMIT caps
        environ.setdefault(name, "1")
    return {**environ, "PYTHONSAFEPATH": "1", **({"PYTHONPATH": os.pathsep.join(path)} if path else {})}


class Worker:
    """One ``python -m einderiv.serve.worker`` process, and a thread that reads its answers."""

    def __init__(self, memory_limit: int | None = MEMORY_LIMIT):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "einderiv.serve.worker", *([f"--memory={memory_limit}"] if memory_limit else [])],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=worker_environment(),
            cwd=WORKER_DIRECTORY,
            start_new_session=os.name == "posix",  # Ctrl-C in the terminal stops the server, which stops us
        )
        self.lines: queue.Queue[bytes] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.put(line)
        self.lines.put(b"")  # the process ended

    def send(self, item: dict) -> None:
        self.process.stdin.write(json.dumps(item).encode() + b"\n")
        self.process.stdin.flush()

    def receive(self, timeout: float) -> bytes:
        """The next line, b"" when the process ended; raises queue.Empty after ``timeout``."""
        return self.lines.get(timeout=timeout)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(5)
        for stream in (self.process.stdin, self.process.stdout):
            try:
                stream.close()
            except OSError:
                pass


class Workers:
    """``size`` worker processes.  :meth:`run` gives a query's ``(status, payload)``, or raises
    :class:`TimeLimit` after ``time_limit`` seconds; a request waits at most ``wait`` seconds for
    a free worker."""

    def __init__(
        self, size: int, time_limit: float, wait: float | None = None, memory_limit: int | None = MEMORY_LIMIT
    ):
        self.size = size
        self.time_limit = time_limit
        self.memory_limit = memory_limit
        self.wait = wait if wait is not None else max(30.0, 3 * time_limit)
        self._idle: queue.Queue[Worker] = queue.Queue()
        self._live: set[Worker] = set()
        self._lock = threading.Lock()
        self._closed = False
        for worker in [self._spawn() for _ in range(size)]:  # started together, awaited in turn
            self._admit(worker)
        if self._idle.empty():
            self.close()
            raise Unavailable("no worker process started (see the errors above)")

    def _spawn(self) -> Worker:
        worker = Worker(self.memory_limit)
        with self._lock:
            self._live.add(worker)
        return worker

    def _admit(self, worker: Worker) -> None:
        """Wait for ``worker`` to be ready, and make it available (or stop it)."""
        try:
            ready = worker.receive(START_TIMEOUT) == b"ready\n"
        except queue.Empty:
            ready = False
        with self._lock:
            if ready and not self._closed:
                self._idle.put(worker)
                return
        self._retire(worker)

    def _retire(self, worker: Worker) -> None:
        with self._lock:
            self._live.discard(worker)
        worker.stop()

    def _replace(self, worker: Worker) -> None:
        """Stop ``worker`` and start another in the background."""
        self._retire(worker)
        with self._lock:
            if self._closed:
                return
        threading.Thread(target=lambda: self._admit(self._spawn()), daemon=True).start()

    def run(self, item: dict) -> tuple[int, dict]:
        """The worker's answer to ``item`` (a query as JSON), within the time limit.  A worker
        found dead (killed from outside while idle, say) is replaced and the work given, once,
        to the next free one."""
        try:
            return self._attempt(item)
        except Ended:
            return self._attempt(item)

    def _attempt(self, item: dict) -> tuple[int, dict]:
        if self._closed:
            raise Unavailable("the server is shutting down")
        try:
            worker = self._idle.get(timeout=self.wait)
        except queue.Empty:
            raise Unavailable(f"every worker was busy for {self.wait:g} s") from None
        try:
            worker.send(item)
            line = worker.receive(self.time_limit)
        except queue.Empty:
            self._replace(worker)
            raise TimeLimit from None
        except (OSError, ValueError) as err:  # the worker died before it read the query, or was stopped
            line = b""
            error = err
        else:
            error = None
        if not line:  # killed from outside, out of memory, stopped by close(), ...
            self._replace(worker)
            if self._closed:
                raise Unavailable("the server is shutting down")
            raise Ended(f"the worker process ended ({error or worker.process.poll()})")
        try:
            status, payload = json.loads(line)
        except ValueError:  # not an answer: something else wrote to the channel
            self._replace(worker)
            raise Unavailable("the worker process wrote something other than an answer") from None
        if isinstance(payload, dict) and payload.get("limit") == "memory":
            self._replace(worker)  # it ran out of memory: a fresh one takes its place
        else:
            self._idle.put(worker)
        return status, payload

    def close(self) -> None:
        """Stop every worker."""
        with self._lock:
            self._closed = True
            live = list(self._live)
            self._live.clear()
        for worker in live:
            worker.stop()
