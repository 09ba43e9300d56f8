"""A bundle exported for clients: the compact, signed form the JavaScript runtime
(``clients/js/src/runtime``) loads and decides with exactly as :class:`~closedloop.runtime.runtime.Runtime` does.

:func:`client_form` builds the document (a JSON object: the system's context schema, its feature
expressions as JSON trees, the intelligence's parameters, the experience, the guardrails, every
reason a decision may give); :func:`export_client_bundle` writes it as the bytes a client downloads::

    {"format": "closedloop.client.bundle.signed", "format_version": 1,
     "payload": "<the client form as canonical JSON text>",
     "signature": {"algorithm": "ed25519", "key_id": "ed25519:…", "public_key": "<base64 raw key>",
                   "signature": "<base64 Ed25519 signature>"}}

The signature is over ``b"closedloop.client.bundle.v1:" + payload.encode("utf-8")`` — the exact bytes
of the payload string, so a client verifies them before it parses the payload (``signature`` is
``null`` when no key is given). What cannot run in a client is refused here, naming the part: a
custom feature (Python code), a scikit-learn model (skops), guardrails on a ranking system. A
ranking system's form (:mod:`closedloop.runtime.export_ranking`) carries its candidate schema and
its Ranking experience in place of actions and thresholds.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from closedloop.errors import BundleError, SpecError
from closedloop.experience.experiences import BestAction, Ranking, Thresholds
from closedloop.experience.exploration import EpsilonGreedy, Softmax, SquareCB
from closedloop.experience.guardrails import FrequencyCap, Guardrail, InMemoryCapStore
from closedloop.runtime.bundle import Bundle
from closedloop.runtime.export_parts import ClientRefusal, expr_tree, field_tree, intelligence_tree, number
from closedloop.runtime.export_ranking import ranking_form
from closedloop.runtime.serving import _Plan
from closedloop.runtime.signing import SigningKey

__all__ = ["CLIENT_FORMAT", "ENVELOPE_FORMAT", "MESSAGE_PREFIX", "client_form", "envelope", "export_client_bundle", "signed_message"]

CLIENT_FORMAT = "closedloop.client.bundle"
ENVELOPE_FORMAT = "closedloop.client.bundle.signed"
FORMAT_VERSION = 1
#: What the signed message starts with (so the signature means nothing else).
MESSAGE_PREFIX = b"closedloop.client.bundle.v1:"


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def signed_message(payload: str) -> bytes:
    """The bytes a client bundle's signature is over: the prefix, then the payload's UTF-8."""
    return MESSAGE_PREFIX + payload.encode("utf-8")


def _policy(policy: Any, actions: tuple[str, ...]) -> dict[str, Any] | None:
    if policy is None:
        return None
    if isinstance(policy, EpsilonGreedy):
        mask = policy.mask(actions)
        return {"kind": "epsilon", "epsilon": policy.epsilon, "low": number(policy.low), "high": number(policy.high),
                "mask": None if mask is None else list(mask)}
    if isinstance(policy, Softmax):
        return {"kind": "softmax", "temperature": policy.temperature}
    if isinstance(policy, SquareCB):
        return {"kind": "squarecb", "gamma": policy.gamma}
    raise ClientRefusal("experience", f"the exploration policy {policy!r} cannot run in a client")


def _experience(exp: Any, outputs: tuple[str, ...], actions: tuple[str, ...], explored: int) -> dict[str, Any]:
    index = {a: i for i, a in enumerate(actions)}
    if isinstance(exp, Thresholds):
        return {"kind": "thresholds", "column": outputs.index(exp.score),
                "levels": [[t, index[a]] for a, t in exp.levels], "otherwise": index[exp.otherwise],
                "explored": explored, "explore": _policy(exp.explore, actions)}
    if isinstance(exp, BestAction):
        return {"kind": "best_action", "explored": explored, "explore": _policy(exp.explore, actions)}
    raise ClientRefusal(
        "experience", f"the experience {exp!r} cannot run in the client runtime (it decides thresholds, best actions "
        "and rankings)")


def _guard(rules: list[Guardrail], system: Any, offset: int) -> dict[str, Any] | None:
    """The guardrails as GuardLayer binds them: plain rules innermost first (with their action
    maps and conditions), then the frequency caps; ``offset``: the first guardrail reason's index."""
    if not rules:
        return None
    actions = list(system.actions)
    index = {a: i for i, a in enumerate(actions)}
    plain = [r for r in rules if not isinstance(r, FrequencyCap)]
    caps = [r for r in rules if isinstance(r, FrequencyCap)]
    layers = []
    for r in reversed(plain):
        m = list(range(len(actions)))
        for src, dst in r.overrides(actions).items():
            m[index[src]] = index[dst]
        cond = r.condition()
        if cond is None:  # pragma: no cover - GuardLayer refused it already
            raise ClientRefusal("guardrails", f"guardrail {r.name!r} has no condition")
        layers.append({"name": r.name, "map": m, "when": expr_tree(cond.describe(), f"guardrail {r.name!r}")})
    return {
        "offset": offset,
        "layers": layers,
        "caps": [{"name": c.name, "action": index[c.action], "fallback": index[c.fallback], "limit": c.limit,
                  "per_ns": c.per_ns} for c in caps],
    }


def _header(system: Any, bundle: Bundle) -> dict[str, Any]:
    return {"id": bundle.version, "system": system.name, "schema_version": system.schema_version,
            "content_digest": bundle.content_digest, "created_at": bundle.manifest["created_at"],
            "feature_fingerprint": system.feature_fingerprint}


def client_form(system: Any, bundle: Bundle) -> dict[str, Any]:
    """The client form of ``bundle`` for ``system`` (checked to fit it): a JSON-ready document, or
    a :class:`~closedloop.errors.BundleError` naming the part that cannot run in a client."""
    if not isinstance(bundle, Bundle):
        raise SpecError(f"The 'bundle' parameter of client_form must be a closedloop.Bundle. Got {bundle!r} instead.")
    if isinstance(system.experience, Ranking):
        head = {"format": CLIENT_FORMAT, "format_version": FORMAT_VERSION, "bundle": _header(system, bundle)}
        return {**head, **ranking_form(system, bundle)}
    if not isinstance(system.experience, Thresholds | BestAction):
        _experience(system.experience, (), (), 0)  # refuses it, naming the experience
    plan = _Plan(system, bundle, (), InMemoryCapStore())  # checks the bundle against the system
    actions = tuple(system.actions)
    features = system.features
    chooser_reasons = len(plan.chooser.reasons)
    return {
        "format": CLIENT_FORMAT,
        "format_version": FORMAT_VERSION,
        "bundle": _header(system, bundle),
        "schema": {"extra": system.schema.extra, "fields": [field_tree(f) for f in system.schema.fields]},
        "unit": system.unit,
        "features": [{"name": f.name, "expr": expr_tree(f.expr.describe(), f"feature {f.name!r}")} for f in features.features],
        "intelligence": intelligence_tree(bundle.intelligence, features),
        "outputs": list(plan.outputs),
        "actions": list(actions),
        "presentations": [{"mode": p.mode, "choices": list(p.choices), "outcomes": list(p.outcomes)} for p in plan.presentations],
        "default": plan.default,
        "experience": _experience(bundle.experience(system), plan.outputs, actions, plan.chooser.explored),
        "guard": _guard([*system.guardrails, *bundle.guardrails], system, chooser_reasons),
        "reasons": list(plan.reasons),
    }


def export_client_bundle(system: Any, bundle: Bundle, key: SigningKey | None = None) -> bytes:
    """The bytes of ``bundle``'s signed client form for ``system`` (see the module doc): the
    envelope as compact JSON, the payload signed by ``key`` (unsigned when None)."""
    if key is not None and not isinstance(key, SigningKey):
        raise SpecError(f"The 'key' parameter of export_client_bundle must be a SigningKey or None. Got {key!r} instead.")
    try:
        payload = _canonical(client_form(system, bundle))
    except ValueError as exc:  # a number JSON cannot carry
        raise BundleError("export", f"the client form is not JSON-serializable: {exc}") from exc
    return envelope(payload, key)


def envelope(payload: str, key: SigningKey | None) -> bytes:
    """``payload`` (JSON text) in the signed envelope the clients verify (see the module doc),
    signed by ``key`` (unsigned when None): compact JSON and a newline, as UTF-8."""
    signature = None
    if key is not None:
        signature = {"algorithm": "ed25519", "key_id": key.key_id, "public_key": key.public_key,
                     "signature": base64.b64encode(key.sign_message(signed_message(payload))).decode("ascii")}
    doc = {"format": ENVELOPE_FORMAT, "format_version": FORMAT_VERSION, "payload": payload, "signature": signature}
    return (json.dumps(doc, separators=(",", ":"), ensure_ascii=False) + "\n").encode("utf-8")
