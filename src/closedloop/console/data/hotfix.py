"""The Hot-fix page and ``closedloop guardrails show|set``: production's allow and block lists,
and a guardrail hot fix deployed through the registry like any deployment.

A hot fix overrides the intelligence where it is wrong *now* — a domain that must never be
blocked, one that must always be — without waiting for a model: the two lists are bundle
guardrails (:class:`~closedloop.experience.guardrails.AllowList` ``hotfix_allow`` and
:class:`~closedloop.experience.guardrails.BlockList` ``hotfix_block``, data in the bundle's
manifest, never code). :func:`apply_hotfix`:

1. checks every entry (a clear :class:`~closedloop.errors.SpecError` naming the list, the entry
   and the rule; nothing is changed);
2. builds a new bundle from production's — the same intelligence and thresholds, production as
   its parent, its other guardrails kept, the two lists replaced — and signs it with the home's
   key when the home has one;
3. runs the sanity checks a deploy runs (:func:`closedloop.registry.sanity.run_checks`): the
   bundle must load, score in range and keep the latency budget, exactly as ``closedloop deploy``
   requires. ``parity`` and ``gate`` judge a *new model* by its evaluation report, which a hot fix
   has none of; for them the hot fix makes its own, stricter check — the new bundle replays the
   golden rows of production's newest report with every score equal bit for bit and the same
   action wherever no hot-fix list applies — and deploys with ``force`` naming that check (the
   history records both);
4. deploys it as production (``registry.deploy``, optimistic on the revision read in step 1),
   recorded in the history with the actor and the reason like any deployment.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from closedloop.console.data._common import known_system
from closedloop.context.fields import Str
from closedloop.errors import RegistryError, SpecError, clip_value
from closedloop.experience.guardrails import AllowList, BlockList, Guardrail
from closedloop.registry.args import check_actor, check_reason
from closedloop.registry.sanity import golden_rows, run_checks
from closedloop.runtime.bundle import Bundle

__all__ = ["ALLOW", "BLOCK", "MAX_ENTRIES", "apply_hotfix", "guardrail_lists", "validate_entries"]

#: The names of the hot fix's two guardrails in a bundle.
ALLOW, BLOCK = "hotfix_allow", "hotfix_block"
#: The most entries one list may hold.
MAX_ENTRIES = 10_000
_BAD_CHARS = re.compile(r"[\s\x00-\x1f\x7f-\x9f]")
#: The checks a hot fix answers by its own replay (no evaluation report can judge it).
_OWN = ("parity", "gate")


def _production(registry: Any, name: str) -> str:
    prod = registry.state(name).production
    if prod is None:
        raise RegistryError(f"System {name!r} has nothing in production: a hot fix edits production's guardrails. "
                            "Deploy a bundle first ('closedloop deploy').")
    return str(prod)


def _describe(g: Guardrail) -> dict[str, Any]:
    return dict(g.describe())


def guardrail_lists(registry: Any, system: Any) -> dict[str, Any]:
    """Production's allow and block lists: ``allow`` / ``block`` (the hot fix's entries), ``field``
    (the context field they match), ``lists`` (every allow or block list the bundle carries), the
    text fields a list may match, the production version and the revision (pass it back as
    ``expected_revision``)."""
    name = known_system(registry, system)
    version = _production(registry, name)
    bundle = registry.load_bundle(version)
    rails = {g.name: g for g in bundle.guardrails}
    allow, block = rails.get(ALLOW), rails.get(BLOCK)
    field = next((g.field for g in (allow, block) if isinstance(g, AllowList | BlockList)), None)
    fields = [f.name for f in system.schema.fields if isinstance(f, Str)] if hasattr(system, "schema") else []
    return {
        "system": name, "production": version, "revision": registry.state(name).revision,
        "field": field, "fields": fields,
        "allow": list(getattr(allow, "values", ())), "block": list(getattr(block, "values", ())),
        "lists": [_describe(g) for g in bundle.guardrails],
    }


def _field(system: Any, field: Any) -> Str:
    f = system.schema.by_name.get(field) if isinstance(field, str) else None
    texts = [g.name for g in system.schema.fields if isinstance(g, Str)]
    if not isinstance(f, Str):
        raise SpecError(f"The hot fix's 'field' must be a text context field of system {system.name!r} ({texts}). "
                        f"Got {clip_value(field)!r} instead.")
    return f


def validate_entries(system: Any, field: str, which: str, entries: Any) -> list[str]:
    """The entries of the list ``which`` (``"allow"`` or ``"block"``) checked against the context
    field ``field``; returns them stripped, lower-cased (as the list matches) and deduplicated.
    A bad entry raises :class:`SpecError` naming the list, the entry and the rule."""
    f = _field(system, field)
    if isinstance(entries, str | bytes) or not isinstance(entries, Iterable):
        raise SpecError(f"The {which} list must be a list of {field} values. Got {clip_value(entries)!r} instead.")
    out: list[str] = []
    for i, e in enumerate(entries):
        where = f"The {which} list's entry #{i + 1} {clip_value(e)!r}"
        if not isinstance(e, str):
            raise SpecError(f"{where} must be a string (a {field} value).")
        v = e.strip()
        if not v:
            raise SpecError(f"{where} must not be empty.")
        if _BAD_CHARS.search(v):
            raise SpecError(f"{where} must not contain spaces or control characters (one {field} value per entry).")
        if len(v) > f.limit:
            raise SpecError(f"{where} must be at most {f.limit} characters (the limit of field {field!r}); "
                            f"it has {len(v)}.")
        if f.choices is not None and v not in f.choices:
            raise SpecError(f"{where} must be one of {list(f.choices)} (the choices of field {field!r}).")
        out.append(v.lower())
    uniq = sorted(set(out))
    if len(uniq) > MAX_ENTRIES:
        raise SpecError(f"The {which} list may hold at most {MAX_ENTRIES} entries. Got {len(uniq)} instead.")
    return uniq


def _rails(system: Any, prod: Bundle, field: str, allow: list[str], block: list[str], reason: str) -> list[Guardrail]:
    """Production's guardrails with the two hot-fix lists replaced (an empty list is left out)."""
    both = sorted(set(allow) & set(block))
    if both:
        raise SpecError(f"The entry {both[0]!r} is in both the allow and the block list: an entry may be in one only.")
    rails: list[Guardrail] = [g for g in prod.guardrails if g.name not in (ALLOW, BLOCK)]
    for cls, name, values, action in ((AllowList, ALLOW, allow, "allow"), (BlockList, BLOCK, block, "block")):
        if not values:
            continue
        if action not in system.actions:
            raise SpecError(f"The {action} list needs an action named {action!r}; system {system.name!r} declares "
                            f"{list(system.actions)}.")
        rails.append(cls(name, field, values, action=action, reason=f"hot fix: {reason}"[:500]))
    return rails


def _replay(system: Any, prod: Bundle, new: Bundle, golden: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The hot fix's own parity: production's golden rows through the new bundle — every score
    bit for bit, the action the same unless a hot-fix list changed it (the decision names the
    guardrail that did) or a frequency cap fired in the evaluation's batch (as the parity check
    allows)."""
    import struct

    from closedloop.runtime.runtime import Runtime

    if not golden:
        return {"passed": True, "rows": 0, "detail": f"production {prod.version} has no golden rows to replay; the "
                "new bundle's intelligence and thresholds are production's (the same manifest entries)"}
    rt = Runtime(system, new)
    caps = {(g.action, g.fallback) for g in (*system.guardrails, *new.guardrails) if hasattr(g, "fallback")}
    lists = [g for g in new.guardrails if g.name in (ALLOW, BLOCK) and isinstance(g, AllowList | BlockList)]

    def listed(ctx: dict[str, Any]) -> bool:  # an entry matches, and a system rule may have acted after it
        return any(str(ctx.get(g.field, "")).lower() in g.values for g in lists)

    overridden = 0
    for i, row in enumerate(golden):
        d = rt.decide(row["context"], decision_id=row["decision_id"], timestamp_ns=int(row["timestamp_ns"]))
        for k, want in row["scores"].items():
            got = d.scores.get(k)
            if got is None or want is None or struct.pack("<d", got) != struct.pack("<d", float(want)):
                return {"passed": False, "rows": i, "detail": f"golden row {i}: score {k!r} {got!r} differs from "
                        f"production's {want!r}"}
        if d.action != row["action"]:
            if d.guardrail in (ALLOW, BLOCK) or (d.guardrail is not None and listed(row["context"])):
                overridden += 1
            elif (d.action, row["action"]) not in caps:
                return {"passed": False, "rows": i, "detail": f"golden row {i}: action {d.action!r} where production "
                        f"decided {row['action']!r} and no hot-fix entry matches"}
    return {"passed": True, "rows": len(golden), "detail": f"{len(golden)} of production's golden rows replayed: every "
            f"score bit for bit; {overridden} action(s) changed, each by a hot-fix entry"}


def _signed(bundle: Bundle, registry: Any, home: Path) -> tuple[Bundle, str | None]:
    """The bundle signed with the home's key (None: signed), or unsigned with the reason recorded."""
    from closedloop.runtime.signing import home_key

    if home_key(home, create=False) is None:
        return bundle, "the home has no signing key (keys/bundle-signing.pem): the hot fix is deployed unsigned"
    return bundle.signed(registry.signing_key(home)), None


def apply_hotfix(registry: Any, home: str | Path, system: Any, *, allow: Sequence[str] | None = None,
                 block: Sequence[str] | None = None, field: str | None = None, actor: str, reason: str,
                 expected_revision: int | None = None) -> dict[str, Any]:
    """Replace production's hot-fix allow and/or block list (None: keep that list; ``[]``: empty
    it) and deploy the result as production (the module doc's steps). ``field``: the text context
    field the lists match (default: the one production's lists match). Returns ``changed``, the new
    bundle's ``version``, the lists before and after, the checks and the registry's change."""
    name = known_system(registry, system)
    actor, reason = check_actor(actor), check_reason(reason)
    if not hasattr(system, "schema"):
        raise SpecError(f"apply_hotfix needs the closedloop.System of {name!r} (to check the entries). Got {system!r}.")
    before = guardrail_lists(registry, system)
    rev = before["revision"] if expected_revision is None else expected_revision
    field = field or before["field"]
    if field is None:
        raise SpecError(f"The hot fix needs a 'field' (the text context field the lists match): production has no "
                        f"hot-fix list yet. One of {before['fields']}.")
    if before["field"] is not None and field != before["field"]:
        raise SpecError(f"The hot fix's 'field' is {before['field']!r} (production's lists match it). Got {field!r}: "
                        "empty both lists first to switch fields.")
    new_allow = before["allow"] if allow is None else validate_entries(system, field, "allow", allow)
    new_block = before["block"] if block is None else validate_entries(system, field, "block", block)
    result: dict[str, Any] = {"system": name, "production_before": before["production"], "field": field,
                              "before": {"allow": before["allow"], "block": before["block"]},
                              "after": {"allow": new_allow, "block": new_block}}
    if new_allow == before["allow"] and new_block == before["block"]:
        return {**result, "changed": False, "version": before["production"], "message": "no change: the lists are as given"}
    prod = registry.load_bundle(before["production"], system)
    rails = _rails(system, prod, field, new_allow, new_block, reason)
    built = Bundle.build(system, prod.intelligence, thresholds=prod.thresholds, parent=prod.version,
                         metrics={**prod.metrics, "hotfix": {"allow": len(new_allow), "block": len(new_block),
                                                             "field": field, "reason": reason}},
                         guardrails=rails)
    bundle, unsigned = _signed(built, registry, Path(home))
    return {**result, **_deploy(registry, system, name, prod, bundle, rails, actor, reason, rev, unsigned)}


def _deploy(registry: Any, system: Any, name: str, prod: Bundle, bundle: Bundle, rails: list[Guardrail], actor: str,
            reason: str, rev: int, unsigned: str | None) -> dict[str, Any]:
    """Steps 3 and 4: the deploy's sanity checks, the hot fix's replay, the deployment."""
    reports = registry.reports(prod.version)
    replay = _replay(system, prod, bundle, golden_rows(reports, prod.version))
    _, checks = run_checks(system, lambda: bundle, [], production=prod.version, need_gate=True)
    failed = [c for c in checks if not c.passed and c.name not in _OWN]
    if failed or not replay["passed"]:
        why = "; ".join([f"{c.name}: {c.detail}" for c in failed] + ([] if replay["passed"] else [replay["detail"]]))
        raise RegistryError(f"The hot fix of {name!r} failed its checks, nothing was deployed: {why}")
    force = (f"guardrail hot fix of {prod.version} (same intelligence and thresholds; parity and gate judged by the hot "
             f"fix's replay: {replay['detail']})")
    change = registry.deploy(system, bundle, actor=actor, reason=reason, force=force, expected_revision=rev,
                             allow_unsigned=unsigned)
    return {"changed": True, "version": bundle.version, "replay": replay, "unsigned": unsigned,
            "checks": [c.to_dict() for c in checks], "change": change.to_dict(), "message": change.message}
