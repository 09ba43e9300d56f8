"""Bundle signatures (closedloop.runtime.signing): a home's key, created once and private; deploy refuses
what a trusted key did not sign — before it reads anything else of the bundle, leaving nothing
behind — unless an explicit reason is recorded; revoked keys; a rollback to an unsigned bundle
in the history still works and says so."""

from __future__ import annotations

import json
import multiprocessing
import os
import stat

import pytest

from closedloop import Bundle
from closedloop.errors import BundleError, RegistryError
from closedloop.registry import Registry
from closedloop.runtime.signing import SigningKey, home_key, verify_signature


def _bundle(phishing, block=0.9):
    from examples.phishing.heuristic import heuristic_intelligence

    return Bundle.build(phishing, heuristic_intelligence(), thresholds={"block": block, "warn": 0.5})


def _make_key(home, q):
    q.put(home_key(home).key.key_id)


def test_a_home_key_is_created_once_private_and_shared(tmp_path):
    home = tmp_path / "home"
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_make_key, args=(home, q)) for _ in range(4)]
    for p in procs:
        p.start()
    ids = {q.get(timeout=60) for _ in procs}
    for p in procs:
        p.join(timeout=60)
    assert len(ids) == 1  # four processes at once: one key
    hk = home_key(home)
    assert not hk.created and hk.key.key_id in ids
    assert stat.S_IMODE(os.stat(hk.path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(hk.path.parent).st_mode) == 0o700
    assert [p.name for p in hk.path.parent.iterdir()] == [hk.path.name]  # no temporary left behind
    assert home_key(tmp_path / "other", create=False) is None


def test_signatures_verify_and_name_what_is_wrong(phishing):
    key, other = SigningKey.generate(), SigningKey.generate()
    b = _bundle(phishing).signed(key)
    trusted = {key.key_id: key.public_key}
    assert verify_signature(b.signature, b.manifest["digest"], trusted) == key.key_id
    with pytest.raises(BundleError, match="not signed"):
        verify_signature(None, b.manifest["digest"], trusted)
    with pytest.raises(BundleError, match="does not trust"):
        verify_signature(_bundle(phishing).signed(other).signature, b.manifest["digest"], trusted)
    c = _bundle(phishing, block=0.8)
    with pytest.raises(BundleError, match="signature is for manifest digest"):  # a signature moved to another bundle
        verify_signature(b.signature, c.manifest["digest"], trusted)
    forged = dict(b.signature, digest=c.manifest["digest"])
    with pytest.raises(BundleError, match="forged or corrupted"):
        verify_signature(forged, c.manifest["digest"], trusted)
    wrong_key = dict(b.signature, key_id=other.key_id)  # claims another trusted key
    with pytest.raises(BundleError, match="forged or corrupted"):
        verify_signature(wrong_key, b.manifest["digest"], {**trusted, other.key_id: other.public_key})


def test_the_home_key_is_trusted_by_its_registry_and_a_strange_one_is_not(tmp_path, phishing):
    home = tmp_path / "home"
    with Registry(f"sqlite:///{tmp_path}/r.sqlite", home / "bundles").open() as reg:
        key = reg.signing_key(home)
        assert list(reg.trusted_keys()) == [key.key_id]
        assert reg.keys()[0]["added_by"] == "closedloop"
        # a key found in another home, with a registry that trusts keys already: not trusted silently
        stranger = home_key(tmp_path / "home2").key  # made outside this registry, e.g. dropped in
        assert reg.signing_key(tmp_path / "home2").key_id == stranger.key_id
        assert list(reg.trusted_keys()) == [key.key_id]


def test_deploy_refuses_unsigned_and_unknown_bundles_before_reading_them(tmp_path, phishing):
    home = tmp_path / "home"
    reg = Registry(f"sqlite:///{tmp_path}/r.sqlite", home / "bundles").open()
    key = reg.signing_key(home)
    # an unsigned bundle whose intelligence would fail to parse: the signature is what refuses it
    path = _bundle(phishing).save(tmp_path / "out" / "unsigned")
    entry = path / "intelligence.json"
    entry.chmod(0o600)
    entry.write_bytes(b"{" * 100_000)  # would blow the parser; never read
    with pytest.raises(BundleError) as ei:
        reg.deploy(phishing, path, actor="alice", reason="unsigned", force="no report")
    assert ei.value.check == "signature" and "not signed" in str(ei.value)
    stranger = SigningKey.generate()
    strange = _bundle(phishing, block=0.8).save(tmp_path / "out" / "strange", key=stranger)
    with pytest.raises(BundleError, match="does not trust"):
        reg.deploy(phishing, strange, actor="alice", reason="unknown key", force="no report")
    assert not (home / "bundles").exists() or list((home / "bundles").iterdir()) == []  # nothing copied
    assert reg.bundles(phishing) == []  # nothing registered
    hist = reg.history("phishing")
    assert [e["status"] for e in hist] == ["refused", "refused"]
    assert "signature" in hist[0]["detail"]["error"]

    # signed by the home key: deployed, and the check says by whom
    good = _bundle(phishing).save(tmp_path / "out" / "good", key=key)
    ch = reg.deploy(phishing, good, actor="alice", reason="signed", force="no report")
    assert ch.detail["checks"][0] == {"name": "signature", "passed": True, "forced": False,
                                      "detail": f"signed by {key.key_id} (home {home.resolve()})"}
    assert json.loads((home / "bundles" / ch.after.production / "signature.json").read_text())["key_id"] == key.key_id

    # the opt-out for local experiments: explicit and recorded
    with pytest.raises(RegistryError, match="allow_unsigned"):
        reg.deploy(phishing, strange, actor="alice", reason="x", shadow=True, allow_unsigned="  ")
    ch = reg.deploy(phishing, strange, actor="alice", reason="try it locally", shadow=True, force="no report",
                    allow_unsigned="local experiment")
    sig = ch.detail["checks"][0]
    assert sig["name"] == "signature" and not sig["passed"] and sig["forced"]
    assert ch.detail["allowed_unsigned"] == "local experiment"

    # a revoked key: its bundles are refused from now on, even already registered ones
    reg.stop(phishing, ch.after.shadows[0], actor="alice", reason="done")
    reg.trust_key(stranger.public_key, name="a colleague", actor="alice")
    reg.deploy(phishing, strange, actor="alice", reason="now trusted", shadow=True, force="no report")
    reg.revoke_key(stranger.key_id, actor="alice")
    assert stranger.key_id not in reg.trusted_keys()
    assert [k["revoked_by"] for k in reg.keys()] == [None, "alice"]
    with pytest.raises(BundleError, match="does not trust"):
        reg.deploy(phishing, ch.after.shadows[0], actor="alice", reason="again", flight="f", share=0.1,
                   force="no report")
    with pytest.raises(RegistryError, match="trusted key id"):
        reg.revoke_key(stranger.key_id, actor="alice")
    reg.close()


def test_a_rollback_to_an_unsigned_bundle_in_the_history_works_and_warns(tmp_path, phishing):
    home = tmp_path / "home"
    with Registry(f"sqlite:///{tmp_path}/r.sqlite", home / "bundles").open() as reg:
        old = _bundle(phishing, block=0.8)  # as deployed before signatures existed
        reg.deploy(phishing, old, actor="alice", reason="legacy", force="no report", allow_unsigned="legacy")
        new = _bundle(phishing).signed(reg.signing_key(home))
        reg.deploy(phishing, new, actor="alice", reason="signed", force="no report")
        back = reg.rollback(phishing, actor="alice", reason="new one misbehaves")
        assert back.after.production == old.version
        assert "not signed by a trusted key" in back.message
        assert back.detail["unsigned"][0]["bundle"] == old.version
        assert reg.deployment(phishing).production.version == old.version  # it loads and serves


def test_the_same_content_built_again_later_registers_and_deploys_as_the_stored_bundle(tmp_path, phishing):
    """A plan's heuristic is rebuilt by every process (another creation time, so another manifest
    digest, the same content and version): registering or deploying it again is the stored one."""
    import datetime as dt

    from examples.phishing.heuristic import heuristic_intelligence

    home = tmp_path / "home"
    with Registry(f"sqlite:///{tmp_path}/r.sqlite", home / "bundles").open() as reg:
        key = reg.signing_key(home)
        first = Bundle.build(phishing, heuristic_intelligence(), created_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
        again = Bundle.build(phishing, heuristic_intelligence(), created_at=dt.datetime(2026, 2, 1, tzinfo=dt.UTC))
        assert first.version == again.version and first.manifest["digest"] != again.manifest["digest"]
        rec = reg.add_bundle(first.signed(key), actor="alice")
        assert reg.add_bundle(again.signed(key), actor="bob") == rec
        ch = reg.deploy(phishing, again.signed(key), actor="bob", reason="bootstrap", force="no report")
        assert ch.after.production == first.version
        assert reg.deployment(phishing).production.manifest["digest"] == first.manifest["digest"]
        # a different bundle under the same version is still refused
        other = Bundle.build(phishing, heuristic_intelligence(), thresholds={"block": 0.8, "warn": 0.5},
                             version=first.version)
        with pytest.raises(RegistryError, match="immutable"):
            reg.add_bundle(other.signed(key), actor="eve")
