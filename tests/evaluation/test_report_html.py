"""closedloop.evaluation.html: the report as one self-contained HTML page — without a
browser: escaping, the size bound, the vendored libraries, the CLI. tests/evaluation/test_report_browser.py
opens the page in headless Chromium."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from closedloop.cli.main import app
from closedloop.evaluation import EvaluationError, render_html, write_html
from closedloop.evaluation import html as H
from closedloop.evaluation.report import evaluate
from closedloop.training import train
from support.pages import import_pages

SYSTEM = "examples.phishing.system:phishing"
XSS = "</script><script>alert(1)</script>"
ASSETS = Path(H.__file__).parent / "assets"  # closedloop/evaluation/html/assets


def _import(system, root: Path, n: int, seed: int = 7, referrer: str | None = None):
    from examples.phishing.data import generate

    cols, labels = generate(n, seed, phish_rate=0.3)
    return import_pages(system, cols, labels, root, extra=None if referrer is None else {"referrer_domain": [referrer] * n})


@pytest.fixture(scope="module")
def small(phishing, tmp_path_factory):
    root = tmp_path_factory.mktemp("report-html")
    ds = _import(phishing, root, 2000, referrer=XSS)
    logistic = train(phishing, ds.path, model="logistic").bundle
    report = evaluate(phishing, [logistic, logistic], ds.path, bootstrap=10, golden=5)
    return {"root": root, "ds": ds, "bundle": logistic, "report": report}


def _json_block(page: str) -> str:
    m = re.search(r'<script type="application/json" id="cl-charts">(.*?)</script>', page, re.S)
    assert m, "no chart data block"
    return m.group(1)


def test_page_is_self_contained(small):
    page = render_html(small["report"])
    assert page.startswith("<!DOCTYPE html>")
    # the three libraries are inlined verbatim, nothing is loaded from anywhere
    for name in ("vega.min.js", "vega-lite.min.js", "vega-embed.min.js"):
        assert (ASSETS / name).read_text("utf-8") in page
    markup = re.sub(r"(<script[^>]*>).*?</script>", r"\1</script>", page, flags=re.S)  # the HTML around scripts
    assert not re.search(r"<script[^>]*\bsrc=", markup, re.I)
    assert not re.search(r"<(link|img|iframe|object|embed|base)\b", markup, re.I)
    assert not re.search(r"\b(src|href)\s*=\s*['\"]?(https?:)?//", markup, re.I)
    # the policy allows exactly the page's own scripts (by hash) and no connection
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page).group(1)
    assert "default-src 'none'" in csp and "unsafe-eval" not in csp and "connect-src" not in csp
    scripts = re.findall(r"<script>(.*?)</script>", page, re.S)
    assert len(scripts) == 4
    for s in scripts:
        digest = "sha256-" + base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()
        assert f"'{digest}'" in csp
    # the chart data are valid JSON, and every chart has a container
    charts = json.loads(_json_block(page))
    assert len(charts) == 4 + len(small["report"]["bundles"][0]["slices"])
    for c in charts:
        assert f"id='{c['id']}'" in page and c["spec"]["title"]["text"]


def test_context_values_are_escaped(small):
    rep = copy.deepcopy(small["report"])
    b = rep["bundles"][0]
    fp = b["worst"]["false_positives"][0]
    assert fp["context"]["referrer_domain"] == XSS  # the real evaluation carried the value through
    # the same text in a slice value (chart data and table), a version and a gate reason
    b["slices"]["browser"][0]["value"] = XSS
    rep["bundles"][1]["slices"]["browser"][0]["value"] = XSS
    b["version"] = XSS
    rep["gate"]["reasons"] = [XSS]
    page = render_html(rep)
    assert XSS not in page and "<script>alert" not in page
    assert page.count("<script") == 5  # the JSON block and the four inline scripts, no more
    assert "&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in page  # shown as text in tables
    block = _json_block(page)
    assert "<" not in block and ">" not in block and "&" not in block
    charts = json.loads(block)
    values = [r["value"] for c in charts if c["spec"]["title"]["text"] == "AUC by browser"
              for r in c["spec"]["data"]["values"]]
    assert XSS in values  # JSON.parse gives the exact text back


def test_size_does_not_grow_with_rows(phishing, tmp_path):
    sizes = {}
    for n in (2_000, 100_000):
        ds = _import(phishing, tmp_path / str(n), n)
        b = train(phishing, ds.path, model="logistic").bundle
        rep = evaluate(phishing, [b], ds.path, bootstrap=5, golden=50)
        sizes[n] = len(render_html(rep).encode())
    small, large = sizes[2_000], sizes[100_000]
    assert large <= 5_000_000
    assert abs(large - small) / small < 0.05, sizes  # aggregates only: same size for 50× the rows


def _worst_case_report(base: dict, n: int) -> dict:
    """``base`` blown up as if evaluated on ``n`` rows by a report that thins nothing: full-length
    curves, a slice field with a value per 20 rows, thousands of long worst mistakes."""
    rep = copy.deepcopy(base)
    rep["rows"] = {"n": n, "positives": n // 10}
    rng = np.random.default_rng(0)
    for b in rep["bundles"]:
        x = np.sort(rng.random(n // 4))
        b["curves"] = {k: {"x": x.tolist(), "y": np.sqrt(x).tolist(), "thresholds": (1 - x).tolist()}
                       for k in ("roc", "pr")}
        b["slices"]["domain"] = [
            {"value": f"site{i}.example", "n": 20, "positives": 2, "auc": 0.9, "auc_ci": [0.8, 1.0],
             "error_rate": 0.1, "p_auc": 0.5, "p_error": 0.5, "significantly_worse": i % 1999 == 0}
            for i in range(n // 20)
        ]
        big = dict(b["worst"]["false_positives"][0], context={"url": "https://x.example/" + "a" * 8000, "n": 1})
        b["worst"] = {"false_positives": [big] * 5_000, "false_negatives": [big] * 5_000}
        b["golden"] = b["golden"] * (10_000 // max(1, len(b["golden"])))
    return rep


def test_a_million_row_report_stays_under_5_mb(small):
    rep = _worst_case_report(small["report"], 1_000_000)
    page = render_html(rep)
    assert len(page.encode()) <= 5_000_000
    charts = json.loads(_json_block(page))
    roc = next(c for c in charts if c["spec"]["title"]["text"] == "ROC curve")
    lines = [layer for layer in roc["spec"]["layer"] if layer["mark"]["type"] == "line"][0]["data"]["values"]
    assert len(lines) <= H.MAX_CURVE_POINTS * len(rep["bundles"])
    dom = next(c for c in charts if c["spec"]["title"]["text"] == "AUC by domain")
    shown = {r["value"] for r in dom["spec"]["data"]["values"]}
    assert len(shown) == H.MAX_SLICE_VALUES
    flagged = {r["value"] for r in rep["bundles"][0]["slices"]["domain"] if r["significantly_worse"]}
    assert flagged <= shown  # the flagged values are never the ones left out
    long_url = rep["bundles"][0]["worst"]["false_positives"][0]["context"]["url"]
    assert long_url not in page and f"{long_url[:H.MAX_TEXT]}… ({len(long_url):,} characters)" in page
    assert f"{1_000_000 // 20 - H.MAX_SLICE_VALUES:,} smaller values of domain are not shown" in page
    assert f"{5_000 - H.MAX_MISTAKES:,} more in the JSON report" in page


def test_thin_keeps_both_ends():
    assert H._thin(5, 10) == [0, 1, 2, 3, 4]
    idx = H._thin(1001, 400)
    assert idx[0] == 0 and idx[-1] == 1000 and len(idx) == 400 and idx == sorted(set(idx))


def test_bad_report_is_refused():
    with pytest.raises(EvaluationError, match="The 'report' of render_html must be an evaluation report"):
        render_html({"schema_version": 2, "bundles": []})
    with pytest.raises(EvaluationError, match="Got 'nope' instead"):
        render_html("nope")


def test_one_bundle_without_costs_renders(small):
    rep = copy.deepcopy(small["report"])
    rep["bundles"] = rep["bundles"][:1]
    rep["comparison"] = rep["gate"] = None
    m = rep["bundles"][0]["mistakes"]
    m["costs"], m["cost_per_1000"], m["best_thresholds"], m["best_cost_per_1000"] = {}, None, None, None
    page = render_html(rep)
    assert "No gate verdict" in page and "declares no mistake costs" in page
    titles = [c["spec"]["title"]["text"] for c in json.loads(_json_block(page))]
    assert "Expected cost per 1,000 decisions" not in titles and "ROC curve" in titles


def test_a_report_without_a_positive_count_renders(small):
    rep = copy.deepcopy(small["report"])
    rep["rows"]["positives"] = None  # the header's base rate is unknown, not a crash
    assert "(— positive, base rate —)" in render_html(rep)


def test_best_confusion_is_shown_when_the_report_has_it(small):
    rep = copy.deepcopy(small["report"])
    m = rep["bundles"][0]["mistakes"]
    assert "best_confusion" in m  # the JSON report carries it
    m["best_confusion"] = {a: {"legit": 1234567.0, "phish": 0.0} for a in m["confusion"]}
    assert "1,234,567" in render_html(rep)


def test_vendored_libraries_match_their_readme():
    readme = (ASSETS / "README.md").read_text()
    listed = dict((name, digest) for digest, name in re.findall(r"^([0-9a-f]{64})  (\S+)$", readme, re.M))
    assert set(listed) == {"vega.min.js", "vega-lite.min.js", "vega-embed.min.js"}
    for name, digest in listed.items():
        assert hashlib.sha256((ASSETS / name).read_bytes()).hexdigest() == digest, name
        assert "</script" not in (ASSETS / name).read_text("utf-8").lower()  # safe to inline
    for lic in ("LICENSE.vega", "LICENSE.vega-lite", "LICENSE.vega-embed"):
        assert "Redistribution and use" in (ASSETS / lic).read_text()


def test_write_html(small, tmp_path):
    out = write_html(small["report"], tmp_path / "sub" / "r.html")
    assert out == tmp_path / "sub" / "r.html"
    assert out.read_text("utf-8").startswith("<!DOCTYPE html>")
    assert [p.name for p in out.parent.iterdir()] == ["r.html"]  # no temporary left behind


def test_cli_writes_the_page_beside_the_json(small, tmp_path):
    bundle_dir = small["bundle"].save(tmp_path / "bundle")
    runner = CliRunner()
    base = ["--home", str(tmp_path / "home"), "evaluate", "--system", SYSTEM, "--bundle", str(bundle_dir),
            "--dataset", str(small["ds"].path), "--bootstrap", "5"]
    r = runner.invoke(app, [*base, "--out", str(tmp_path / "r" / "eval.json")])
    assert r.exit_code == 0, r.output
    line = json.loads(r.stdout.strip().splitlines()[-1])
    assert line["path"] == str(tmp_path / "r" / "eval.json")
    assert line["html"] == str(tmp_path / "r" / "eval.html")
    page = Path(line["html"]).read_text("utf-8")
    body = json.loads(Path(line["path"]).read_text())
    assert body["bundles"][0]["version"] in page and "No gate verdict" in page

    r = runner.invoke(app, [*base, "--html", str(tmp_path / "elsewhere.html")])
    assert r.exit_code == 0, r.output
    line = json.loads(r.stdout.strip().splitlines()[-1])
    assert line["html"] == str(tmp_path / "elsewhere.html") and Path(line["html"]).is_file()
    assert Path(line["path"]).parent == tmp_path / "home" / "reports"

    r = runner.invoke(app, [*base, "--out", str(tmp_path / "same.html"), "--html", str(tmp_path / "same.html")])
    assert r.exit_code != 0 and "must differ" in r.output
