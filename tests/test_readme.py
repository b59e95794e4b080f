"""Every `$ einderiv ...` example in README.md prints what the README shows, and every Python
block runs (its printed output equals the plain block after it, where there is one)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"```(\w*)\n(.*?)```", README, re.S)
NEEDS = ("torch", "dask", "distributed")  # optional libraries: their blocks are shown, not run here

COMMANDS = [
    (command, expected)
    for language, body in BLOCKS
    if body.startswith("$ einderiv")
    for command, _, expected in (chunk.partition("\n") for chunk in re.split(r"^\$ ", body, flags=re.M)[1:])
    if expected.strip() != "..."
]
PYTHON = [
    (body, BLOCKS[k + 1][1] if k + 1 < len(BLOCKS) and BLOCKS[k + 1][0] == "" else None)
    for k, (language, body) in enumerate(BLOCKS)
    if language == "python" and not any(name in body for name in NEEDS)
]


#: rounding-level errors (``max relative error 6.7e-12``, ``max absolute difference 4.4e-16`` or 0)
#: depend on the BLAS build, the CPU and the order of summation: compared as "a number below 1e-9"
_ROUNDING = re.compile(r"\b\d(?:\.\d+)?e-(?:1\d|[2-9]\d)\b|(?<=difference )0(?=\))")


def _masked(text: str) -> str:
    return _ROUNDING.sub("<rounding>", text)


@pytest.mark.parametrize("command, expected", COMMANDS, ids=[c[:60] for c, _ in COMMANDS])
def test_command_prints_what_the_readme_shows(command, expected):
    words = shlex.split(command)
    assert words[0] == "einderiv"
    done = subprocess.run([sys.executable, "-m", "einderiv", *words[1:]], capture_output=True, text=True, timeout=120)
    assert _masked(done.stdout + done.stderr) == _masked(expected)


@pytest.mark.parametrize("code, shown", PYTHON, ids=[f"python block {k}" for k in range(len(PYTHON))])
def test_python_block_runs(code, shown):
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    if shown is not None and not shown.startswith("$"):
        assert _masked(done.stdout) == _masked(shown)


def test_the_readme_has_examples_to_check():
    assert len(COMMANDS) >= 10 and len(PYTHON) >= 4
