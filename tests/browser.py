"""The headless Chromium that tests/test_browser.py drives (the system's package and its
chromedriver, through selenium), and the README's screenshot of the page:
``python -m tests.browser docs/serve.png``."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

CHROMIUM = os.environ.get("EINDERIV_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("EINDERIV_CHROMEDRIVER", "/usr/bin/chromedriver")
#: Chromium's own connections (updates, sync, field trials) are refused on a closed network: off
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,1250",
)
SCREENSHOT_STATE = "?expr=f+%3D+x_i+A_ij+x_j&wrt=x&claim=%28A+%2B+A%5ET%29+x"


def missing() -> list[str]:
    """What a browser test needs and this machine lacks."""
    out = [path for path in (CHROMIUM, CHROMEDRIVER) if not Path(path).exists()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        out.append('selenium (pip install -e ".[test]")')
    return out


def chromium(profile: str):
    """A headless Chromium with its profile in the folder ``profile``."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def rendered(driver, latex: str) -> bool:
    """The page shows ``latex`` rendered by KaTeX (not as text), and its fonts have loaded."""
    return driver.execute_script(
        "const box = document.getElementById('math');"
        "return box.dataset.latex === arguments[0] && box.querySelector('.katex-html') !== null"
        " && document.fonts.status === 'loaded'"
        " && [...document.fonts].some((f) => f.family.includes('KaTeX') && f.status === 'loaded');",
        latex,
    )


def screenshot(path: Path) -> None:
    """The page with xᵀAx and a claim, as the README shows it."""
    from selenium.webdriver.support.ui import WebDriverWait

    import einderiv
    from einderiv.serve import Server

    latex = einderiv.diff("f = x_i A_ij x_j", "x").latex()
    with Server("127.0.0.1", 0, workers=2).start() as server, tempfile.TemporaryDirectory() as profile:
        driver = chromium(profile)
        try:
            driver.get(server.url + SCREENSHOT_STATE)
            wait = WebDriverWait(driver, 30)
            wait.until(lambda d: rendered(d, latex))
            wait.until(lambda d: d.find_element("id", "verdict").get_attribute("class") == "matches")
            driver.save_screenshot(str(path))
        finally:
            driver.quit()


if __name__ == "__main__":
    screenshot(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/serve.png"))
