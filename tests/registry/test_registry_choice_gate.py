"""A choice candidate (BestAction) through the registry's gate: an evaluation report on a logged
bandit dataset judges the candidate by its policy value against production; the registry's 'gate'
check reads that verdict and its 'parity' check replays the report's golden rows through
Runtime.decide — a passed gate deploys without force, a failed one is refused with the reason."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from closedloop import Bundle
from closedloop.errors import SanityCheckError
from closedloop.evaluation.report import evaluate
from closedloop.intelligence import KINDS
from closedloop.registry import Registry
from closedloop.runtime.signing import SigningKey

_spec = importlib.util.spec_from_file_location("choice_log", Path(__file__).parents[1] / "evaluation" / "test_choice_report.py")
assert _spec is not None and _spec.loader is not None
log = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(log)

KEY = SigningKey.generate()
FIRST = "the first production of the test"


@pytest.fixture
def setup(tmp_path, monkeypatch):
    # the test intelligence's kind, as a user passes their own kinds (the registry loads bundles with KINDS)
    monkeypatch.setitem(KINDS, log.PerAction.kind, log.PerAction)  # type: ignore[index]
    system = log.choice_system(log.Softmax(temperature=0.1))
    ds, _ = log.write_log(tmp_path, system, n=6000)
    good = Bundle.build(system, log.informative(), version="informative").signed(KEY)
    noise = Bundle.build(system, log.noise(), version="noise").signed(KEY)
    better = evaluate(system, [noise, good], ds, bootstrap=100, seed=1)
    worse = evaluate(system, [good, noise], ds, bootstrap=100, seed=1)
    assert better["gate"]["passed"] and not worse["gate"]["passed"]
    return system, good, noise, better, worse


def _registry(home, *bundles):
    reg = Registry(f"sqlite:///{home}/registry.sqlite", home / "bundles").open()
    reg.trust_key(KEY.public_key, name="tests", actor="a")
    for b in bundles:
        reg.add_bundle(b, actor="a")
    return reg


def test_a_choice_candidate_whose_gate_passed_deploys_without_force(tmp_path, setup):
    system, good, noise, better, _ = setup
    with _registry(tmp_path, good, noise) as reg:
        reg.add_report(better, actor="a")
        reg.deploy(system, noise.version, actor="a", reason="first", force=FIRST)
        change = reg.deploy(system, good.version, actor="a", reason="better by its policy value")  # no force
        checks = {c["name"]: c for c in change.detail["checks"]}
        assert checks["gate"]["passed"] and "the gate passed against production noise" in checks["gate"]["detail"]
        assert checks["parity"]["passed"] and "50 golden rows reproduced exactly" in checks["parity"]["detail"]
        assert reg.deployment(system).production.version == good.version


def test_a_golden_choice_that_does_not_replay_is_refused_by_the_parity_check(tmp_path, setup):
    import copy

    system, good, noise, better, _ = setup
    tampered = copy.deepcopy(better)
    row = next(b for b in tampered["bundles"] if b["version"] == good.version)["golden"][3]
    row["action"] = next(a for a in log.ACTIONS if a != row["action"])
    with _registry(tmp_path, good, noise) as reg:
        reg.add_report(tampered, actor="a")
        reg.deploy(system, noise.version, actor="a", reason="first", force=FIRST)
        with pytest.raises(SanityCheckError, match=r"parity: golden row 3 .*action .* at runtime, the evaluation recorded") as exc:
            reg.deploy(system, good.version, actor="a", reason="better by its policy value")
        assert exc.value.failed == ["parity"]


def test_a_choice_candidate_whose_gate_failed_is_refused_with_the_reason(tmp_path, setup):
    system, good, noise, _, worse = setup
    with _registry(tmp_path, good, noise) as reg:
        reg.add_report(worse, actor="a")
        reg.deploy(system, good.version, actor="a", reason="first", force=FIRST)
        with pytest.raises(SanityCheckError, match=r"gate: the gate failed against informative: the candidate's policy "
                                                   r"value by snips is -[0-9.e-]+ against the baseline's") as exc:
            reg.deploy(system, noise.version, actor="a", reason="worse by its policy value")
        assert "gate" in exc.value.failed
        assert reg.deployment(system).production.version == good.version
