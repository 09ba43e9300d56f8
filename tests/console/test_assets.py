"""The console's vendored front-end assets in a real browser, under the console's strict
Content-Security-Policy (no 'unsafe-eval', no 'unsafe-inline'):

* ``static/vendor/charts.js`` draws Vega-Lite charts (spec fetched by URL, or read from a JSON
  ``<script>`` by id or as the next sibling; SVG and canvas) with vega-interpreter — every chart
  drawn, no CSP violation, nothing requested from anywhere but the app;
* the same libraries *without* the interpreter are refused by the CSP (the check can fail);
* the helpers of ``tests/support/console_browser.py``: axe-core (vendored in ``tests/assets/axe``)
  injected under that CSP finds the violations of a page built to have them and none serious on a
  clean one; screenshots land in the artifact folder.

A throwaway Starlette app stands in for the console (console-core builds the real one): it serves
the report's vendored vega / vega-lite / vega-embed (``evaluation/html/assets``) and the console's
``static/vendor`` with the CSP header on every response. Debian's Chromium through Selenium
(``tests/support/browser.py``); the test fails, never skips, when it is missing.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

import closedloop
from support.console_browser import (
    artifacts_dir,
    console_driver,
    console_messages,
    csp_violations,
    describe_violations,
    forget_logs,
    requested_hosts,
    requested_urls,
    run_axe,
    screenshot,
    serious,
    serve,
    wait_for,
)

PKG = Path(closedloop.__file__).resolve().parent
VENDOR = PKG / "console" / "static" / "vendor"
CHART_LIBS = PKG / "evaluation" / "html" / "assets"
CSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:"
LIBS = ["/static/charts/vega.min.js", "/static/charts/vega-lite.min.js", "/static/charts/vega-embed.min.js",
        "/static/vendor/vega-interpreter.min.js"]

#: A goal over time as the console draws it: the series (a calculated field, a filter, a time
#: unit, a tooltip), the target as a rule, deployments marked on the time axis, a brush to pick the range.
GOAL_SPEC = {
    "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
    "width": 480, "height": 180, "title": "false_block_rate (hourly) against its target",
    "data": {"values": [{"t": f"2026-01-{d:02d}T{h:02d}:00:00Z", "v": 0.0005 + 0.0001 * ((d * 7 + h) % 9)}
                        for d in range(1, 8) for h in range(0, 24, 6)]},
    "layer": [
        {"transform": [{"calculate": "datum.v * 1000", "as": "per1k"}, {"filter": "datum.per1k >= 0 && isValid(datum.t)"}],
         "params": [{"name": "range", "select": {"type": "interval", "encodings": ["x"]}}],
         "mark": {"type": "line", "point": True},
         "encoding": {"x": {"field": "t", "type": "temporal", "timeUnit": "yearmonthdatehours", "title": "window"},
                      "y": {"field": "per1k", "type": "quantitative", "title": "per 1,000"},
                      "tooltip": [{"field": "t", "type": "temporal"}, {"field": "per1k", "format": ".3f"}]}},
        {"data": {"values": [{"target": 1.0}]}, "mark": {"type": "rule", "strokeDash": [4, 4], "color": "#a33"},
         "encoding": {"y": {"field": "target", "type": "quantitative"}}},
        {"data": {"values": [{"at": "2026-01-03T12:00:00Z", "what": "deploy v2"}, {"at": "2026-01-05T06:00:00Z", "what": "rollback"}]},
         "mark": {"type": "rule", "color": "#555"},
         "encoding": {"x": {"field": "at", "type": "temporal"}, "tooltip": {"field": "what"}}},
    ],
}
BAR_SPEC = {
    "$schema": "https://vega.github.io/schema/vega-lite/v5.json", "width": 300, "height": 120,
    "data": {"values": [{"action": a, "n": n} for a, n in (("allow", 870), ("warn", 90), ("block", 40))]},
    "transform": [{"joinaggregate": [{"op": "sum", "field": "n", "as": "total"}]},
                  {"calculate": "datum.n / datum.total", "as": "share"}],
    "mark": "bar",
    "encoding": {"x": {"field": "share", "type": "quantitative", "axis": {"format": "%"}},
                 "y": {"field": "action", "type": "nominal", "sort": "-x"},
                 "color": {"condition": {"test": "datum.action === 'block'", "value": "#a33"}, "value": "#4c78a8"}},
}

WATCH_JS = """window.__cspViolations = [];
document.addEventListener("securitypolicyviolation",
  e => window.__cspViolations.push(e.violatedDirective + " blocked " + e.blockedURI));"""
#: Vega without the interpreter: its expressions compile with `new Function` — the CSP refuses.
UNSAFE_JS = """document.addEventListener("DOMContentLoaded", () =>
  vegaEmbed(document.getElementById("c"), JSON.parse(document.getElementById("s").textContent),
            {actions: false, defaultStyle: false, tooltip: false})
    .then(() => document.documentElement.setAttribute("data-charts", "drawn"),
          e => { document.documentElement.setAttribute("data-charts", "failed"); console.error("vega: " + e); }));"""


def _page(body: str, scripts: list[str], title: str = "Charts") -> str:
    tags = "".join(f'<script src="{s}"></script>' for s in scripts)
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title><link rel="icon" href="data:,">'
            f'<link rel="stylesheet" href="/static/vendor/charts.css"><script src="/watch.js"></script>{tags}</head>'
            f"<body><main><h1>{title}</h1>{body}</main></body></html>")


def _json_script(spec: dict, id_: str | None = None) -> str:
    text = json.dumps(spec).replace("</", "<\\/")
    return f'<script type="application/json"{f" id={id_!r}" if id_ else ""}>{text}</script>'


CHARTS = _page(
    '<div class="vl-chart" id="by-url" data-spec-url="/spec/goal.json"></div>'
    '<div class="vl-chart" id="by-id" data-spec="bar-spec" data-description="Share of each action"></div>'
    '<div class="vl-chart" id="by-sibling" data-spec=""></div>' + _json_script(GOAL_SPEC)
    + '<div class="vl-chart" id="canvas" data-spec="bar-spec" data-renderer="canvas"></div>'
    + _json_script(BAR_SPEC, "bar-spec"),
    [*LIBS, "/static/vendor/charts.js"],
)
UNSAFE = _page('<div id="c"></div>' + _json_script(BAR_SPEC, "s"), [*LIBS[:3], "/unsafe.js"], "Unsafe")
#: axe finds: an image without alt text, a button without a name, a form field without a label.
A11Y_BAD = _page('<img src="data:image/gif;base64,R0lGODlhAQABAAAAACw=">'
                 '<button type="button"></button><input type="text">', [], "Broken")
A11Y_GOOD = _page('<p>Every goal met.</p><label for="q">Decision id</label> <input id="q" type="text">'
                  '<button type="button">Look up</button>', [], "Clean")


def _app():
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.middleware.base import BaseHTTPMiddleware
    from starlette.responses import HTMLResponse, JSONResponse, Response
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    async def csp(request, call_next):
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = CSP
        return response

    def html(text):
        return lambda request: HTMLResponse(text)

    def js(text):
        return lambda request: Response(text, media_type="text/javascript")

    return Starlette(routes=[
        Route("/", html(CHARTS)), Route("/unsafe", html(UNSAFE)),
        Route("/a11y-bad", html(A11Y_BAD)), Route("/a11y-good", html(A11Y_GOOD)),
        Route("/spec/goal.json", lambda request: JSONResponse(GOAL_SPEC)),
        Route("/watch.js", js(WATCH_JS)), Route("/unsafe.js", js(UNSAFE_JS)),
        Mount("/static/charts", StaticFiles(directory=CHART_LIBS)),
        Mount("/static/vendor", StaticFiles(directory=VENDOR)),
    ], middleware=[Middleware(BaseHTTPMiddleware, dispatch=csp)])


@pytest.fixture(scope="module")
def site():
    with serve(_app()) as served:
        driver = console_driver()
        try:
            yield served, driver
        finally:
            driver.quit()


def _open(site, path):
    served, driver = site
    forget_logs(driver)
    driver.get(served.url + path)
    return served, driver


_STATE = """return [...document.querySelectorAll("div.vl-chart")].map(el => ({
  id: el.id, state: el.getAttribute("data-chart-state"),
  marks: el.querySelectorAll("svg g.role-mark path, svg g.role-mark line, svg g.role-mark rect, svg g.role-mark").length,
  canvas: [...el.querySelectorAll("canvas")].some(c => c.width > 0 && c.height > 0)}))"""


def _brush(driver, chart_id):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    svg = driver.find_element(By.CSS_SELECTOR, f"#{chart_id} svg")
    ActionChains(driver).move_to_element_with_offset(svg, -150, 0).click_and_hold() \
        .move_by_offset(200, 0).release().perform()


def test_charts_draw_under_the_strict_csp(site):
    served, driver = _open(site, "/")
    assert wait_for(driver, "document.documentElement.getAttribute('data-charts')") == "drawn", \
        (driver.execute_script(_STATE), console_messages(driver))
    charts = {c["id"]: c for c in driver.execute_script(_STATE)}
    assert set(charts) == {"by-url", "by-id", "by-sibling", "canvas"}
    for c in charts.values():
        assert c["state"] == "drawn", c
    for name in ("by-url", "by-id", "by-sibling"):
        assert charts[name]["marks"] > 0, charts[name]
    assert charts["canvas"]["canvas"], charts["canvas"]
    _brush(driver, "by-url")  # interaction runs the selection's expressions through the interpreter too
    assert wait_for(driver, "document.querySelector('#by-url .range_brush path').getAttribute('d') !== 'M0,0h0v0h0Z'", 5)
    assert csp_violations(driver) == []
    assert [m for m in console_messages(driver) if m["level"] in ("SEVERE", "WARNING")] == []
    # nothing from outside: the page, its scripts and styles, and the fetched spec — all from the app
    assert requested_hosts(driver) == {f"127.0.0.1:{served.port}"}
    assert f"{served.url}/spec/goal.json" in requested_urls(driver)


def test_vega_without_the_interpreter_is_refused_by_the_csp(site):
    """The control: the same libraries, expressions compiled with `new Function` — blocked and reported."""
    _, driver = _open(site, "/unsafe")
    assert wait_for(driver, "document.documentElement.getAttribute('data-charts')") == "failed"
    found = csp_violations(driver)
    assert any("eval" in v for v in found), (found, console_messages(driver))


def test_axe_finds_the_known_violations_under_the_csp(site):
    _, driver = _open(site, "/a11y-bad")
    violations = run_axe(driver)
    ids = {v["id"] for v in violations}
    assert {"image-alt", "button-name", "label"} <= ids, describe_violations(violations)
    assert serious(violations), describe_violations(violations)
    assert csp_violations(driver) == []  # axe went in through WebDriver, not a blocked <script>


def test_axe_finds_nothing_serious_on_a_clean_page_or_on_the_charts(site):
    _, driver = _open(site, "/a11y-good")
    violations = run_axe(driver)
    assert serious(violations) == [], describe_violations(violations)
    _, driver = _open(site, "/")
    assert wait_for(driver, "document.documentElement.getAttribute('data-charts')") == "drawn"
    assert serious(run_axe(driver)) == []
    assert csp_violations(driver) == []


def test_screenshots_are_kept_as_artifacts(site, monkeypatch, tmp_path):
    monkeypatch.setenv("CLOSEDLOOP_TEST_ARTIFACTS", str(tmp_path / "shots"))
    _, driver = _open(site, "/")
    wait_for(driver, "document.documentElement.getAttribute('data-charts')")
    path = screenshot(driver, "console assets / charts")
    assert path == artifacts_dir() / "console-assets-charts.png" and path.parent == tmp_path / "shots"
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert width >= 400 and height >= 400
