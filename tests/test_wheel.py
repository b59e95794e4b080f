"""The grammar ships inside the wheel: build it, install it into a fresh venv, run from /tmp."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_installed_wheel_runs_outside_the_source_tree():
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"), str(ROOT)],
            check=True,
            env=env,
        )
        (wheel,) = (tmp_path / "dist").glob("einderiv-*.whl")
        subprocess.run([sys.executable, "-m", "venv", str(tmp_path / "venv")], check=True)
        bin_dir = tmp_path / "venv" / ("Scripts" if os.name == "nt" else "bin")
        subprocess.run([str(bin_dir / "python"), "-m", "pip", "install", "-q", str(wheel)], check=True, env=env)

        def in_venv(*command: str, check: bool = True) -> subprocess.CompletedProcess:
            """``command`` (a program of the venv and its arguments), run outside the checkout."""
            return subprocess.run(
                [str(bin_dir / command[0]), *command[1:]],
                cwd=tempfile.gettempdir(),
                capture_output=True,
                text=True,
                env=env,
                check=check,
            )

        result = in_venv("einderiv", "diff", "K_pq = R_mp R_mq", "--wrt", "R", check=False)
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines()[0] == "dK_pq/dR_ij = delta_jp R_iq + R_ip delta_jq"
        packaged = in_venv("python", "-c", "import einderiv.parser as p, pathlib; print(p.__file__)")
        assert str(ROOT) not in packaged.stdout  # imported from the venv, not the checkout
        # the page of einderiv serve ships inside the wheel, KaTeX and its fonts included
        files = in_venv("python", "-c", "from einderiv.serve.server import static_files; print(*static_files())")
        files = files.stdout.split()
        assert {"/", "/app.js", "/style.css", "/katex/katex.min.js", "/katex/katex.min.css"} <= set(files)
        assert "/katex/fonts/KaTeX_Main-Regular.woff2" in files and "/katex/fonts/KaTeX_Math-Italic.woff2" in files
