"""The HTML evaluation report in a real browser: Debian's headless Chromium, driven by
Selenium, opens a report of three bundles from a real evaluation and checks that the page draws
every chart offline, with no console error, no request beyond the file itself, escaped user data,
and the gate verdict in plain sight.

Chromium and chromedriver come from ``scripts/ensure_system_deps.sh`` (``make test`` runs it);
this test fails, never skips, when they are missing.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from closedloop.evaluation import write_html
from closedloop.evaluation.report import evaluate
from closedloop.training import train
from support.browser import browser
from support.pages import import_pages

RULES = {"rules": [["ip_in_url", ">", 0.5, 0.5], ["brand_not_in_domain", ">", 0.5, 0.4]]}
#: Rendered as markup it would load an image and set a flag; rendered as text it does nothing.
XSS_CONTEXT = "</script><script>window.__xss = 1</script>"
XSS_SLICE = '</script><img src=x onerror="window.__xss = 2">'


@pytest.fixture(scope="module")
def page(phishing, tmp_path_factory):
    from examples.phishing.data import generate

    root = tmp_path_factory.mktemp("report-browser")
    cols, labels = generate(3000, 11, phish_rate=0.3)
    labels = labels.copy()
    rng = np.random.default_rng(5)  # a planted bad slice: safari's labels are noisy
    hit = (np.asarray(cols["browser"], dtype=object) == "safari") & (rng.random(labels.size) < 0.3)
    labels[hit] = 1 - labels[hit]
    ds = import_pages(phishing, cols, labels, root, extra={"referrer_domain": [XSS_CONTEXT] * labels.size})
    bundles = [train(phishing, ds.path, model="logistic").bundle,
               train(phishing, ds.path, model="heuristic", params=RULES).bundle,
               train(phishing, ds.path, model="lightgbm").bundle]
    report = evaluate(phishing, bundles, ds.path, bootstrap=40, golden=10)
    shown = copy.deepcopy(report)
    for b in shown["bundles"]:  # a hostile slice value too (it lands in chart data and tables)
        for r in b["slices"]["browser"]:
            if r["value"] == "other":
                r["value"] = XSS_SLICE
    path = write_html(shown, root / "report.html")

    driver = browser()
    try:
        from selenium.common.exceptions import TimeoutException
        from selenium.webdriver.support.ui import WebDriverWait

        url = path.resolve().as_uri()
        driver.get(url)
        try:  # vega-embed draws asynchronously; the page marks the end ("drawn" or "failed")
            WebDriverWait(driver, 30).until(
                lambda d: d.execute_script("return document.documentElement.getAttribute('data-charts')"))
        except TimeoutException:
            pass  # the state below shows what is missing
        state = driver.execute_script("""
            const charts = [...document.querySelectorAll("div.chart")].map(el => ({
              id: el.id, title: el.dataset.chart,
              lines: el.querySelectorAll("svg g.mark-line.role-mark path").length,
              marks: el.querySelectorAll(
                "svg g.role-mark path, svg g.role-mark line, svg g.role-mark rect").length,
              canvas: [...el.querySelectorAll("canvas")].some(c => c.width > 0 && c.height > 0),
            }));
            return {
              drawn: document.documentElement.getAttribute("data-charts"), charts,
              text: document.body.innerText, xss: window.__xss === undefined ? null : window.__xss,
              images: document.images.length, scripts: document.scripts.length,
              resources: performance.getEntriesByType("resource").map(e => e.name),
              flagged: [...document.querySelectorAll("tr.flag td:first-child")].map(td => td.textContent),
            };""")
        state["console"] = driver.get_log("browser")
        state["requests"] = [
            m["params"]["request"]["url"]
            for m in (json.loads(e["message"])["message"] for e in driver.get_log("performance"))
            if m["method"] == "Network.requestWillBeSent"
        ]
    finally:
        driver.quit()
    return {"report": report, "state": state, "url": url}


def test_every_chart_draws_with_a_clean_console(page):
    s = page["state"]
    bad = [e for e in s["console"] if e["level"] in ("SEVERE", "WARNING")]
    assert bad == [], bad
    assert s["drawn"] == "drawn", s["console"]
    titles = [c["title"] for c in s["charts"]]
    assert titles == ["ROC curve", "Precision–recall curve", "Reliability (calibration)",
                      "Expected cost per 1,000 decisions", "AUC by browser", "AUC by country", "AUC by new_user"]
    for c in s["charts"]:
        assert c["marks"] > 0 or c["canvas"], c
    by_title = {c["title"]: c for c in s["charts"]}
    assert by_title["ROC curve"]["lines"] == 3 and by_title["Precision–recall curve"]["lines"] == 3


def test_nothing_is_requested_but_the_file(page):
    s = page["state"]
    assert s["requests"] and set(s["requests"]) == {page["url"]}
    assert s["resources"] == []


def test_user_data_is_text_not_markup(page):
    s = page["state"]
    assert s["xss"] is None and s["images"] == 0 and s["scripts"] == 5
    assert XSS_CONTEXT in s["text"] and XSS_SLICE in s["text"]


def test_verdict_flags_and_numbers_are_on_the_page(page):
    rep, text = page["report"], page["state"]["text"]
    gate = rep["gate"]
    assert ("Gate: PASS" if gate["passed"] else "Gate: FAIL") in text
    for reason in gate["reasons"]:
        assert reason in text
    flagged = {r["value"] for b in rep["bundles"] for r in b["slices"]["browser"] if r["significantly_worse"]}
    assert "safari" in flagged  # the planted slice is found …
    assert set(page["state"]["flagged"]) >= flagged  # … and highlighted
    for b in rep["bundles"]:
        assert f"{b['quality']['auc']:.4f}" in text and b["version"] in text
