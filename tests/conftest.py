"""Test-session hooks: say at the end which optional array backends were tested, and why not.

The backend tests (``tests/test_backends.py``) skip a library that is not installed, and CuPy
without a GPU; this prints one line per optional backend after the run so that a skip is never
silent.  Install the extras from a clone: ``pip install ".[torch]"``, ``".[jax]"``, ``".[dask]"``.
"""

from __future__ import annotations

import importlib

import pytest

OPTIONAL_BACKENDS = ("torch", "jax", "dask", "cupy")
_BACKEND_TESTS = "test_backends.py"
_SELECTED = pytest.StashKey[bool]()


def _import_problem(module: str) -> str | None:
    """None when ``module`` imports, else why not."""
    try:
        importlib.import_module(module)
    except ImportError:
        if module == "cupy":
            return "not installed (CuPy needs a CUDA GPU; install it from its own wheels)"
        return f'not installed (pip install ".[{module}]")'
    except Exception as error:  # noqa: BLE001 - a broken install skips the tests too
        return f"does not import ({type(error).__name__})"
    return None


def _gpu_problem() -> str | None:
    """None when CuPy sees a GPU, else why not."""
    import cupy

    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception:  # noqa: BLE001 - no driver, no device
        return "installed, but no GPU"
    return None if count > 0 else "installed, but no GPU"


def _backend_line(module: str, selected: bool) -> str:
    problem = _import_problem(module)
    if problem is None and module == "cupy":
        problem = _gpu_problem()
    if problem is not None:
        return f"{module}: skipped, {problem}"
    if not selected:
        return f"{module}: available, not run ({_BACKEND_TESTS} was not selected)"
    return f"{module}: tested"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    config.stash[_SELECTED] = any(
        item.nodeid.split("::")[0].endswith((_BACKEND_TESTS, "test_backends_reference.py")) for item in items
    )


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config) -> None:
    selected = config.stash.get(_SELECTED, False)
    terminalreporter.section("optional array backends")
    for module in OPTIONAL_BACKENDS:
        terminalreporter.write_line(_backend_line(module, selected))


@pytest.fixture(autouse=True)
def _mpmath_precision():
    """Each test starts with mpmath at 50 digits, the references' precision, and leaves it as it
    found it: a test that set 60 digits and then 15 made the references of the modules collected
    with it (which set 50 when imported) round at 15, so that log(1 + exp(-40)) was 0 there."""
    import mpmath

    saved = mpmath.mp.dps
    mpmath.mp.dps = 50
    yield
    mpmath.mp.dps = saved
