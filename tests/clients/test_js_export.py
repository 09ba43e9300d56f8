"""``closedloop bundle export --target js``: the signed file, its signature checked by Python and by
Node's WebCrypto over the documented bytes, the runtime loading it, and the refusals."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from typer.testing import CliRunner

from closedloop.cli.main import app
from closedloop.runtime.export_js import signed_message
from support.node_runtime import run_node

runner = CliRunner()

VERIFY = """
const fs = await import("node:fs");
const { loadBundle } = await import("./src/runtime/index.js");
const crypto = globalThis.crypto ?? (await import("node:crypto")).webcrypto;  // Node 18's ES modules: no global
const env = JSON.parse(fs.readFileSync(process.argv[1], "utf8"));
const raw = Uint8Array.from(atob(env.signature.public_key), (c) => c.charCodeAt(0));
const key = await crypto.subtle.importKey("raw", raw, { name: "Ed25519" }, false, ["verify"]);
const sig = Uint8Array.from(atob(env.signature.signature), (c) => c.charCodeAt(0));
const prefix = new TextEncoder().encode("closedloop.client.bundle.v1:");
const body = new TextEncoder().encode(env.payload);
const msg = new Uint8Array(prefix.length + body.length);
msg.set(prefix); msg.set(body, prefix.length);
const ok = await crypto.subtle.verify({ name: "Ed25519" }, key, sig, msg);
msg[msg.length - 2] ^= 1;
const tampered = await crypto.subtle.verify({ name: "Ed25519" }, key, sig, msg);
const rt = loadBundle(env, { system: "phishing", schemaVersion: "1" });
const d = rt.decide({ user_id: "u1", url: "http://10.0.0.1/login", domain: "10.0.0.1" }, { decisionId: "d" });
console.log(JSON.stringify({ ok, tampered, bundleId: rt.bundleId, action: d.action, why: d.why }));
"""


def test_cli_exports_a_signed_bundle_node_verifies_and_loads(tmp_path: Path) -> None:
    from examples.phishing.heuristic import heuristic_intelligence
    from examples.phishing.system import phishing

    from closedloop import Bundle, Runtime

    bundle = Bundle.build(phishing, heuristic_intelligence())
    saved = bundle.save(tmp_path / "b")
    out = tmp_path / "out" / "phishing.json"
    home = tmp_path / "home"
    args = ["--home", str(home), "bundle", "export", str(saved), "--system", "examples.phishing.system:phishing",
            "--target", "js", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["bundle"] == bundle.version and report["bytes"] == out.stat().st_size
    env = json.loads(out.read_bytes())
    sig = env["signature"]
    shown = json.loads(runner.invoke(app, ["--home", str(home), "key", "show"]).stdout)
    assert sig["key_id"] == shown["key_id"] == report["key_id"] and sig["public_key"] == shown["public_key"]
    public = Ed25519PublicKey.from_public_bytes(base64.b64decode(sig["public_key"]))
    public.verify(base64.b64decode(sig["signature"]), signed_message(env["payload"]))  # raises if it does not match
    got = json.loads(run_node("--input-type=module", "-e", VERIFY, str(out)))
    py = Runtime(phishing, bundle).decide({"user_id": "u1", "url": "http://10.0.0.1/login", "domain": "10.0.0.1"}, decision_id="d")
    assert got == {"ok": True, "tampered": False, "bundleId": bundle.version, "action": py.action, "why": py.why}
    assert py.action != "allow"


def test_cli_export_refuses_another_target_and_exports_a_ranking(tmp_path: Path) -> None:
    from examples.feed.system import feed

    from closedloop import Bundle, LogisticModel

    saved = Bundle.build(feed, LogisticModel({feed.features.names[0]: 1.0}, output="score")).save(tmp_path / "b")
    base = ["--home", str(tmp_path / "home"), "bundle", "export", str(saved), "--system", "examples.feed.system:feed",
            "--out", str(tmp_path / "x.json")]
    result = runner.invoke(app, [*base, "--target", "py"])
    assert result.exit_code == 1 and "'--target' option of bundle export must be one of ['js']" in result.output
    assert not (tmp_path / "x.json").exists()
    result = runner.invoke(app, base)  # a ranking system's bundle exports (its client form ranks: runtime.rank)
    assert result.exit_code == 0, result.output
    form = json.loads(json.loads((tmp_path / "x.json").read_bytes())["payload"])
    assert form["experience"]["kind"] == "ranking" and form["candidates"]["id"] == "item_id"
