"""A headless Chromium driven by selenium, for the tests that open a report or page in a browser
(Debian's chromium and chromium-driver, installed by scripts/ensure_system_deps.sh)."""

from __future__ import annotations

import shutil

import pytest


def browser():
    """A new headless Chromium webdriver with the browser and network logs on."""
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.fail(
            "The browser test needs Debian's chromium and chromium-driver on PATH (found chromium="
            f"{chromium!r}, chromedriver={driver!r}). Install them with `bash scripts/ensure_system_deps.sh` "
            "(`make test` runs it)."
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium  # never let selenium-manager download a browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-extensions", "--no-first-run",
                 "--window-size=1400,1000"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)
