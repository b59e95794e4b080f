"""Every script in examples/ runs and its checks pass."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

FOLDER = Path(__file__).resolve().parent.parent / "examples"
EXAMPLES = sorted(p for p in FOLDER.glob("*.py") if not p.name.startswith("_"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs(path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(FOLDER))  # as `python examples/NAME.py` has it
    runpy.run_path(str(path), run_name="__main__")
    assert "all checks passed" in capsys.readouterr().out
