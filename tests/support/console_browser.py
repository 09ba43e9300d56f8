"""What the console's browser tests share: an ASGI app served by uvicorn in a thread on a free
127.0.0.1 port (:func:`serve`), Debian's headless Chromium through Selenium with the browser and
network logs on (:func:`console_driver`, from :mod:`support.browser`), every request the page made
(:func:`requested_urls`, :func:`requested_hosts`) and its console messages (:func:`console_messages`,
:func:`csp_violations`), axe-core's accessibility check (:func:`run_axe`, the copy vendored in
``tests/assets/axe``) and screenshots kept as test artifacts (:func:`screenshot`).

Chromium's logs are drained when read: the readers here keep what they drained on the driver, so
each call returns everything since the driver started (or since :func:`forget_logs`).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from support.browser import browser

AXE = Path(__file__).resolve().parents[1] / "assets" / "axe" / "axe.min.js"
#: Where screenshots go unless CLOSEDLOOP_TEST_ARTIFACTS names a folder.
ARTIFACTS_ENV = "CLOSEDLOOP_TEST_ARTIFACTS"
#: The axe impacts a console page must not have.
SERIOUS = ("serious", "critical")


# -- a server in a thread -----------------------------------------------------------------------------------
@dataclass
class Served:
    """A running server: ``url`` is ``http://127.0.0.1:<port>`` (no trailing slash)."""

    url: str
    port: int
    server: Any
    thread: threading.Thread

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise RuntimeError(f"the server at {self.url} did not stop within {timeout} s")


def start_server(app: Any, *, timeout: float = 15.0) -> Served:
    """Serve the ASGI ``app`` with uvicorn in a daemon thread on a free 127.0.0.1 port (the socket
    is bound here, so no other process can take the port in between); returns once it accepts."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="auto", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the test server's thread ended before it started (see the log above)")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"the test server did not start within {timeout} s")
        time.sleep(0.02)
    return Served(f"http://127.0.0.1:{port}", port, server, thread)


@contextlib.contextmanager
def serve(app: Any) -> Iterator[Served]:
    """``with serve(app) as s: …`` — :func:`start_server`, stopped on the way out."""
    s = start_server(app)
    try:
        yield s
    finally:
        s.stop()


# -- the browser ----------------------------------------------------------------------------------------------
def console_driver() -> Any:
    """A new headless Chromium webdriver (:func:`support.browser.browser`: Debian's chromium and
    chromedriver, never a downloaded one) with the browser and performance (network) logs on."""
    driver = browser()
    driver._closedloop_logs = {"browser": [], "performance": []}
    return driver


def _drain(driver: Any, kind: str) -> list[dict[str, Any]]:
    kept = getattr(driver, "_closedloop_logs", None)
    if kept is None:
        kept = driver._closedloop_logs = {"browser": [], "performance": []}
    kept[kind].extend(driver.get_log(kind))
    return list(kept[kind])


def forget_logs(driver: Any) -> None:
    """Drop what the readers kept (and what Chromium still buffers): later reads start afresh."""
    for kind in ("browser", "performance"):
        driver.get_log(kind)
    driver._closedloop_logs = {"browser": [], "performance": []}


def requested_urls(driver: Any) -> list[str]:
    """Every URL the browser requested (``Network.requestWillBeSent``), in order — pages, scripts,
    styles, images, fetches, whether they succeeded or not."""
    urls = []
    for entry in _drain(driver, "performance"):
        m = json.loads(entry["message"])["message"]
        if m.get("method") == "Network.requestWillBeSent":
            urls.append(m["params"]["request"]["url"])
    return urls


def requested_hosts(driver: Any) -> set[str]:
    """The ``host:port`` of every http(s)/ws(s) request (``data:`` and ``blob:`` URLs load
    nothing from anywhere and are left out)."""
    hosts = set()
    for url in requested_urls(driver):
        parts = urlsplit(url)
        if parts.scheme in ("http", "https", "ws", "wss"):
            hosts.add(parts.netloc)
    return hosts


def console_messages(driver: Any, *levels: str) -> list[dict[str, Any]]:
    """The browser console's messages (``level``, ``message``, ``source``), all of them or those of ``levels``."""
    msgs = _drain(driver, "browser")
    return [m for m in msgs if not levels or m["level"] in levels]


_CSP = re.compile(r"Content Security Policy|Content-Security-Policy|unsafe-eval|unsafe-inline", re.IGNORECASE)


def csp_violations(driver: Any) -> list[str]:
    """The console messages that report a Content-Security-Policy violation (Chromium logs one for
    every blocked script, style, eval and connection), plus the page's own record of
    ``securitypolicyviolation`` events when it keeps one (``window.__cspViolations``)."""
    found = [m["message"] for m in console_messages(driver) if _CSP.search(m["message"])]
    with contextlib.suppress(Exception):
        found += [str(v) for v in driver.execute_script("return window.__cspViolations || []")]
    return found


def wait_for(driver: Any, script: str, timeout: float = 30.0) -> Any:
    """Poll ``return <script>`` in the page until it gives a truthy value (returned); None on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = driver.execute_script("return " + script)
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


# -- accessibility ---------------------------------------------------------------------------------------------
def run_axe(driver: Any, *, context: Any = None, options: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """axe-core's violations on the page now loaded (each ``id``, ``impact``, ``help``, ``nodes``…).

    The vendored ``axe.min.js`` goes in through ``execute_script``: WebDriver evaluates it through
    the DevTools protocol, not as a ``<script>`` element of the page, so the page's
    Content-Security-Policy does not block it (and the page requests nothing for it)."""
    if not driver.execute_script("return typeof window.axe === 'object' && typeof window.axe.run === 'function'"):
        driver.execute_script(AXE.read_text(encoding="utf-8"))
    driver.set_script_timeout(60)
    result = driver.execute_async_script(
        """const [context, options, done] = arguments;
        window.axe.run(context || document, options || {resultTypes: ["violations"]})
          .then(r => done({violations: r.violations}), e => done({error: String(e && e.stack || e)}));""",
        context, options,
    )
    if "error" in result:
        raise RuntimeError(f"axe-core failed on {driver.current_url}: {result['error']}")
    return list(result["violations"])


def serious(violations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The violations whose impact is serious or critical."""
    return [v for v in violations if v.get("impact") in SERIOUS]


def describe_violations(violations: list[dict[str, Any]]) -> str:
    """A readable list for an assertion message: rule, impact, help and the first few targets."""
    return "; ".join(
        f"{v['id']} ({v.get('impact')}): {v.get('help')} at {[n.get('target') for n in v.get('nodes', [])[:3]]}"
        for v in violations
    )


# -- screenshots -----------------------------------------------------------------------------------------------
def artifacts_dir() -> Path:
    """``$CLOSEDLOOP_TEST_ARTIFACTS``, else ``<tmp>/artifacts`` (created)."""
    d = Path(os.environ.get(ARTIFACTS_ENV) or Path(tempfile.gettempdir()) / "artifacts")
    d.mkdir(parents=True, exist_ok=True)
    return d


def screenshot(driver: Any, name: str, *, full_page: bool = True) -> Path:
    """Save a PNG of the page as ``<artifacts>/<name>.png`` (the whole page's height by default,
    through the DevTools protocol) and return its path."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "page"
    path = artifacts_dir() / f"{slug}.png"
    if full_page:
        size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})
        content = size.get("cssContentSize") or size["contentSize"]
        clip = {"x": 0, "y": 0, "width": content["width"], "height": content["height"], "scale": 1}
        shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip})
        path.write_bytes(base64.b64decode(shot["data"]))
    else:
        driver.save_screenshot(str(path))
    return path
