"""Time the console's pages server-side on a home of the size the issue names: 10,000 history
events, 90 days of goal series, 50 reports (``bench/console_home.py`` builds it; the target is
every page in ≤ 200 ms, the first page of each list).

Run it as ``.venv/bin/python bench/console.py --home DIR`` to time a copy of a seeded home built
before (DIR is copied to a temporary folder and never touched; the viewer and admin credentials
are added to the copy when it has none), or without ``--home`` to seed one first
(``tests/support/console_home.py``; ~5 minutes for the big home, ``--quick`` for a small one).

Through the real app (``create_console_app`` over the copy, Starlette's TestClient, logged in
with the viewer's token through the login form): the pages the overview's navigation links to,
read from the page itself (so pages built later are timed when they land), plus the overview's
live fragment (rendered anew, and the ``204`` its poll gets while nothing changed), and the Flights
page "judged again" (its cache cleared before each request, as a registry change or new telemetry
renews it: the guard's queries run each time). Each URL is
asked once to warm up (the first answer, "cold", is printed too), then ``--rounds`` times,
interleaved round-robin with the baseline ``/healthz`` (the app's cheapest route: the same
middleware, no template) so that a page and its baseline see the same machine conditions.
"Server-side" is the time from the app receiving the request to its last body byte (an ASGI
wrapper around the app: the test client's own cost is left out).

Also per page, its data function alone (``closedloop.console.data``: what the page shows, before
rendering), best of 5 — where a slow page's time goes.

It prints per URL the median and p95 (ms), their ratio to the baseline's median, and whether the
target (p95 ≤ 200 ms) is met; it asserts nothing. The last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import json
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "tests"):  # examples/ and tests/support/ are importable from the repo root
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from support.console_home import CONSOLE_USERS, SYSTEM, add_console_tokens, best_ms, seed_console_home  # noqa: E402

TARGET_MS = 200.0
SYSTEM_REF = "examples.phishing.system:phishing"


class Timed:
    """An ASGI wrapper: the time from the request's arrival to the last byte of its body, per path."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.last: dict[str, float] = {}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()

        async def timed_send(message: Any) -> None:
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                self.last[scope["path"]] = (time.perf_counter() - t0) * 1000

        await self.app(scope, receive, timed_send)


def _copy(src: Path) -> Path:
    dst = Path(tempfile.mkdtemp(prefix="console-bench-")) / "home"
    shutil.copytree(src, dst)
    return dst


def _tokens(home: Path) -> dict[str, str]:
    """The copy's viewer and admin tokens: added now (a home built before this bench kept no token)."""
    return add_console_tokens(home)


def _nav(html: str) -> list[tuple[str, str]]:
    """The (label, href) of each link of the page's navigation (``<nav class="pages">``)."""
    m = re.search(r'<nav class="pages"[^>]*>(.*?)</nav>', html, re.S)
    if not m:
        raise SystemExit("the overview has no page navigation (<nav class=\"pages\">): is the console's base.html changed?")
    return [(re.sub(r"<[^>]+>", "", label).strip(), href)
            for href, label in re.findall(r'<a href="([^"]+)"[^>]*>(.*?)</a>', m.group(1), re.S)]


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, int(round(q * (len(xs) - 1)))))]


def data_times(home: Path) -> dict[str, float]:
    """Each page's data function alone on ``home`` (ms, best of 5), on one registry opened once."""
    from examples.phishing.system import phishing

    from closedloop.registry import Registry
    from closedloop.settings import Settings

    # the modules (closedloop.console.data re-exports functions of the same names as some of them)
    flights, goals, history, hotfix, mistakes, overview, reports = (
        importlib.import_module(f"closedloop.console.data.{m}")
        for m in ("flights", "goals", "history", "hotfix", "mistakes", "overview", "reports"))
    now = time.time_ns()
    with Registry.from_settings(Settings(home=home)).open(upgrade=False) as reg:
        fns: dict[str, Callable[[], Any]] = {
            "overview": lambda: overview.overview(reg, home, SYSTEM, now, system_obj=phishing),
            "overview_fingerprint": lambda: overview.fingerprint(reg, home, SYSTEM),
            "history": lambda: history.history(reg, SYSTEM, page=1),
            "goals": lambda: goals.goals(reg, home, phishing, now_ns=now),
            "flights": lambda: flights.flights(reg, home, phishing, now_ns=now),
            "reports": lambda: reports.reports(reg, SYSTEM, page=1),
            "report_files": lambda: reports.report_files(home, page=1, system=SYSTEM),
            "mistakes_worst": lambda: mistakes.worst(reg, SYSTEM, page=1),
            "mistakes_reported": lambda: mistakes.reported(reg, home, phishing, now_ns=now),
            "hotfix": lambda: hotfix.guardrail_lists(reg, phishing),
        }
        out = {}
        for name, fn in fns.items():
            try:
                out[name] = best_ms(fn)
            except Exception as exc:  # noqa: BLE001 - a bench reports what failed and goes on
                print(f"  data {name}: failed: {type(exc).__name__}: {exc}")
        return out


def page_times(home: Path, rounds: int) -> dict[str, Any]:
    """The pages through the app: cold (first) time, then ``rounds`` interleaved with ``/healthz``."""
    return asyncio.run(_page_times(home, rounds))


async def _page_times(home: Path, rounds: int) -> dict[str, Any]:
    import httpx

    from closedloop.console import ConsoleSettings, create_console_app

    tokens = _tokens(home)
    app = create_console_app(ConsoleSettings(home=home, systems=(SYSTEM_REF,)))
    timed = Timed(app)
    gc.freeze()  # as `closedloop console` does before serving (cli/console.py)
    transport = httpx.ASGITransport(app=timed)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
        r = await c.post("/login", data={"token": tokens["viewer"]})
        if r.status_code != 303:
            raise SystemExit(f"the viewer's login failed: {r.status_code} {r.text[:300]}")
        overview = await c.get(f"/systems/{SYSTEM}/overview")
        urls = dict(_nav(overview.text))
        urls["Overview live (changed)"] = f"/systems/{SYSTEM}/overview/live"
        if "Flights" in urls:  # the page keeps its judgement until the registry or the telemetry changes: time it judged again too
            urls["Flights (judged again)"] = urls["Flights"] + "?again=1"
        fp = re.search(r'data-fingerprint="([^"]+)"', overview.text)
        if fp:
            urls["Overview live (204)"] = f"/systems/{SYSTEM}/overview/live?since={quote(fp.group(1))}"
        status, cold, pending = {}, {}, {}
        for label, url in urls.items():
            r = await c.get(url)
            status[label], cold[label] = r.status_code, round(timed.last[url.split("?")[0]], 2)
            pending[label] = "not built yet" in r.text
        times: dict[str, list[float]] = {label: [] for label in urls}
        base: list[float] = []
        for _ in range(rounds):
            await c.get("/healthz")
            base.append(timed.last["/healthz"])
            for label, url in urls.items():
                if "again=1" in url:
                    app.state.console.cache.clear()  # what a change elsewhere does to the page's cache
                await c.get(url)
                times[label].append(timed.last[url.split("?")[0]])
    return {"urls": urls, "status": status, "cold_ms": cold, "pending": pending, "times": times, "baseline": base}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--home", type=Path, default=None, help="a seeded home to copy (never modified); default: seed one")
    ap.add_argument("--rounds", type=int, default=30, help="timed requests per URL (default 30)")
    ap.add_argument("--quick", action="store_true", help="seed a small home (1,000 events, 30 days, 10 reports)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.home is not None:
        if not (args.home / "registry.sqlite").exists():
            raise SystemExit(f"{args.home} holds no registry.sqlite: not a seeded home")
        home = _copy(args.home)
        print(f"timing a copy of {args.home} at {home}")
    else:
        home = Path(tempfile.mkdtemp(prefix="console-bench-")) / "home"
        sizes = dict(history_events=1_000, goal_days=30, reports=10, decisions=2_000) if args.quick else {}
        t0 = time.perf_counter()
        seed_console_home(home, seed=args.seed, **sizes)
        print(f"seeded {home} in {time.perf_counter() - t0:.1f} s")
    try:
        pages = page_times(home, args.rounds)
        data = data_times(home)
    finally:
        shutil.rmtree(home.parent, ignore_errors=True)
    base_med = statistics.median(pages["baseline"])
    rows, met_all = {}, True
    print(f"baseline /healthz: median {base_med:.2f} ms, p95 {_pct(pages['baseline'], 0.95):.2f} ms ({args.rounds} rounds)")
    print(f"{'page':<26} {'status':>6} {'cold':>8} {'median':>8} {'p95':>8} {'×base':>7}  target p95 ≤ {TARGET_MS:g} ms")
    for label, xs in pages["times"].items():
        med, p95 = statistics.median(xs), _pct(xs, 0.95)
        met = p95 <= TARGET_MS
        met_all &= met
        rows[label] = {"url": pages["urls"][label], "status": pages["status"][label], "cold_ms": pages["cold_ms"][label],
                       "median_ms": round(med, 2), "p95_ms": round(p95, 2), "ratio_to_baseline": round(med / base_med, 1),
                       "target_met": met, "pending": pages["pending"][label]}
        note = " (not built yet)" if pages["pending"][label] else ""
        print(f"{label:<26} {pages['status'][label]:>6} {pages['cold_ms'][label]:>8.1f} {med:>8.2f} {p95:>8.2f} "
              f"{med / base_med:>7.1f}  {'met' if met else 'NOT met'}{note}")
    print("data functions alone (ms, best of 5): " + ", ".join(f"{k} {v:g}" for k, v in data.items()))
    slow = [k for k, v in data.items() if v > TARGET_MS / 2]
    if slow:
        print(f"data functions over half the page target ({TARGET_MS / 2:g} ms), before any rendering: {', '.join(slow)}")
    built = [k for k, v in rows.items() if not v["pending"]]
    print(f"target (every page p95 ≤ {TARGET_MS:g} ms): {'met' if met_all else 'NOT met'} on {len(rows)} URLs "
          f"({len(built)} built, {len(rows) - len(built)} not built yet)")
    out = {"home": str(args.home) if args.home else "seeded", "rounds": args.rounds, "target_ms": TARGET_MS,
           "baseline_ms": {"median": round(base_med, 3), "p95": round(_pct(pages["baseline"], 0.95), 3)},
           "pages": rows, "data_ms": data, "target_met": met_all, "viewer": CONSOLE_USERS["viewer"]}
    print(json.dumps(out, sort_keys=True))
    return out


if __name__ == "__main__":
    main()
