"""Two service replicas on one real Redis (ServiceSettings.redis_url): a unit's frequency cap and its
outcome rate limit hold across both, and an unreachable Redis applies the declared policy, counted in
/metrics and said in /readyz."""

from __future__ import annotations

import re
import threading
from datetime import timedelta
from typing import Any

import httpx
import numpy as np
import pytest

from closedloop import Bundle, Client, FrequencyCap, LogisticModel, System, Thresholds
from closedloop.errors import ServiceError, SpecError
from closedloop.runtime.deployment import Deployment
from closedloop.service import ServiceSettings, create_app
from closedloop.service.auth import Credentials
from closedloop.service.settings import RateLimit
from closedloop.service.sources import StaticSource
from closedloop.settings import Settings
from support.service import serve_in_thread


def _system(phishing: System) -> System:
    return System(
        "phishing", context=list(phishing.schema.fields), unit=phishing.unit,
        features={f.name: f.expr for f in phishing.features.features},
        actions=list(phishing.action_specs.values()),
        experience=Thresholds("phish", {"block": 0.99, "warn": 0.0}, otherwise="allow"), labels=phishing.labels,
        guardrails=[FrequencyCap("warn", 3, timedelta(hours=1), fallback="allow")],
    )


def _ctx(i: int) -> dict[str, Any]:
    return {"user_id": "hot", "url": f"https://site{i}.example/a", "domain": f"site{i}.example", "domain_age_days": 5,
            "referrer_domain": "r.example", "has_password_field": True}


def _replicas(phishing: System, tmp, url: str, policy: str = "open"):
    system = _system(phishing)
    rng = np.random.default_rng(0)
    w = {n: float(x) for n, x in zip(system.features.names, rng.normal(0, 0.1, len(system.features)), strict=True)}
    prod = Bundle.build(system, LogisticModel(w, 0.0, output="phish"))
    out = []
    for name in ("a", "b"):
        home = tmp / name
        token = Credentials(home / "credentials.json").add("app", ["decide", "report"])
        st = ServiceSettings(project=Settings(home=home), system="examples.phishing.system:phishing", bundle="unused",
                             redis_url=url, redis_on_unavailable=policy,
                             outcome_rate_per_unit=RateLimit(0.0, 3.0), outcome_rate_per_source=RateLimit(0.0, 1000.0))
        out.append((serve_in_thread(create_app(st, system=system, source=StaticSource(Deployment(prod)))), token))
    return out


def _metric(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    m = re.search(rf"^{re.escape(name)}\{{{re.escape(want)}\}} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def test_caps_and_rate_limits_hold_across_two_replicas(phishing, tmp_path, redis_server):
    (ctx_a, tok_a), (ctx_b, tok_b) = _replicas(phishing, tmp_path, redis_server.url)
    with ctx_a as a, ctx_b as b:
        actions: list[str] = []
        lock = threading.Lock()

        def decide(base: str, token: str, start: int) -> None:
            with Client(base, token, retries=0) as cl:
                got = [cl.decide(_ctx(start + i)).action for i in range(10)]
                got += [d.action for d in cl.decide_batch([_ctx(start + 100 + i) for i in range(10)]).decisions]
            with lock:
                actions.extend(got)

        threads = [threading.Thread(target=decide, args=(base, tok, 1000 * i))
                   for i, (base, tok) in enumerate([(a, tok_a), (b, tok_b)] * 2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(actions) == 80 and actions.count("warn") == 3  # a 4th warning never, whichever replica
        accepted = 0
        for i in range(8):
            base, token = (a, tok_a) if i % 2 else (b, tok_b)
            with Client(base, token, retries=0) as cl:
                try:
                    accepted += cl.report(None, unit="hot", kind="reported_false_warning", source="s")
                except ServiceError as exc:
                    assert exc.status == 429
        assert accepted == 3  # the unit's burst of 3, across both replicas
        assert "closedloop_shared_state_unavailable" in httpx.get(a + "/metrics").text


def test_unreachable_redis_fails_closed_counted_and_shown(phishing, tmp_path, redis_server):
    (ctx_a, tok_a), _ = _replicas(phishing, tmp_path, redis_server.url, policy="closed")
    with ctx_a as a:
        assert httpx.get(a + "/readyz").json()["status"] == "ready"
        redis_server.stop(remove=False)
        with Client(a, tok_a, retries=0) as cl:
            assert cl.decide(_ctx(1)).action == "allow"  # closed: the cap counts as full, warn falls back
            with pytest.raises(ServiceError) as ei:
                cl.report(None, unit="hot", kind="reported_false_warning", source="s")
            assert ei.value.status == 429
        ready = httpx.get(a + "/readyz").json()
        assert ready["status"] == "degraded"
        assert any("shared state (Redis) unreachable" in r and "failing closed" in r for r in ready["reasons"])
        text = httpx.get(a + "/metrics").text
        assert _metric(text, "closedloop_shared_state_unavailable", store="caps") >= 1
        assert _metric(text, "closedloop_shared_state_unavailable", store="rate_source") >= 1


def test_the_settings_are_checked(tmp_path):
    with pytest.raises(SpecError, match="redis_url"):
        ServiceSettings(project=Settings(home=tmp_path), system="m:a", redis_url="http://x")
    with pytest.raises(SpecError, match="redis_on_unavailable"):
        ServiceSettings(project=Settings(home=tmp_path), system="m:a", redis_on_unavailable="maybe")
    st = ServiceSettings(project=Settings(home=tmp_path), system="m:a", redis_url="redis://127.0.0.1:1/0")
    assert ServiceSettings.from_json(st.to_json()).redis_url == "redis://127.0.0.1:1/0"
