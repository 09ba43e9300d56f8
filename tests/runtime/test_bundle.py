"""Bundles: round trip, immutability, and one test per refusal, each naming its check."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from closedloop import Bundle, BundleError, F, LogisticModel, Str, System, Thresholds, verify_bundle
from closedloop.runtime.bundle import _manifest_digest


def model(system, bias: float = -1.0) -> LogisticModel:
    return LogisticModel({n: 0.1 * (i + 1) for i, n in enumerate(system.features.names)}, bias, output="phish")


@pytest.fixture
def saved(phishing, tmp_path) -> Path:
    bundle = Bundle.build(phishing, model(phishing), thresholds={"block": 0.95, "warn": 0.5}, metrics={"auc": 0.9})
    return bundle.save(tmp_path / "b")


def writable(path: Path) -> Path:
    os.chmod(path, 0o644)
    return path


def test_round_trip_keeps_everything(phishing, saved):
    loaded = Bundle.load(saved, phishing)
    built = Bundle.build(phishing, model(phishing), thresholds={"block": 0.95, "warn": 0.5}, metrics={"auc": 0.9})
    assert loaded.version == built.version  # content-addressed: same content, same version
    assert loaded.version.startswith("phishing-")
    assert loaded.thresholds == {"block": 0.95, "warn": 0.5}
    assert loaded.metrics == {"auc": 0.9}
    assert loaded.intelligence.weights == built.intelligence.weights
    m = loaded.manifest
    assert m["system"] == {"name": "phishing", "schema_version": "1"}
    assert m["features"]["fingerprint"] == phishing.feature_fingerprint
    assert set(m["files"]) == {"intelligence.json"}
    assert m["format_version"] == 1 and m["created_at"].endswith("Z")


def test_version_changes_with_content(phishing):
    a = Bundle.build(phishing, model(phishing, -1.0))
    b = Bundle.build(phishing, model(phishing, -1.5))
    c = Bundle.build(phishing, model(phishing, -1.0), thresholds={"block": 0.97, "warn": 0.5})
    assert len({a.version, b.version, c.version}) == 3
    assert Bundle.build(phishing, model(phishing), version="v7").version == "v7"


def test_bundles_are_immutable(phishing, saved):
    with pytest.raises(BundleError) as err:
        Bundle.build(phishing, model(phishing)).save(saved)
    assert err.value.check == "path"
    assert (os.stat(saved / "intelligence.json").st_mode & 0o222) == 0


def test_a_loaded_bundle_can_be_saved_again(phishing, saved, tmp_path):
    again = Bundle.load(saved, phishing).save(tmp_path / "copy")
    assert Bundle.load(again, phishing).version == Bundle.load(saved).version


def refused(path, system=None) -> str:
    with pytest.raises(BundleError) as err:
        Bundle.load(path, system)
    return err.value.check


def test_not_a_directory(tmp_path):
    assert refused(tmp_path / "nothing") == "path"


def test_missing_manifest(saved):
    writable(saved / "manifest.json").unlink()
    assert refused(saved) == "manifest"


def test_manifest_not_json(saved):
    writable(saved / "manifest.json").write_text("{not json")
    assert refused(saved) == "manifest"


def test_unknown_format_version(saved):
    m = json.loads((saved / "manifest.json").read_text())
    m["format_version"] = 99
    writable(saved / "manifest.json").write_text(json.dumps(m))
    assert refused(saved) == "format_version"


def test_edited_manifest_threshold(saved):
    m = json.loads((saved / "manifest.json").read_text())
    m["thresholds"]["block"] = 0.1
    writable(saved / "manifest.json").write_text(json.dumps(m))
    assert refused(saved) == "manifest_digest"


def test_tampered_file_same_size(saved):
    p = writable(saved / "intelligence.json")
    data = bytearray(p.read_bytes())
    i = data.index(b"0.1")
    data[i : i + 3] = b"9.9"
    p.write_bytes(bytes(data))
    assert refused(saved) == "checksum"


def test_truncated_file(saved):
    p = writable(saved / "intelligence.json")
    p.write_bytes(p.read_bytes()[:-10])
    assert refused(saved) == "file_size"


def test_missing_file(saved):
    writable(saved / "intelligence.json").unlink()
    assert refused(saved) == "file_present"


def test_unlisted_file(saved):
    (saved / "payload.pkl").write_bytes(b"\x80\x04")
    assert refused(saved) == "unlisted_file"


def test_path_escaping_the_bundle(saved, tmp_path):
    m = json.loads((saved / "manifest.json").read_text())
    m["files"]["../outside.json"] = {"sha256": "0" * 64, "size": 1}
    m["digest"] = _manifest_digest(m)
    writable(saved / "manifest.json").write_text(json.dumps(m))
    assert refused(saved) == "file_path"


def test_unknown_intelligence_kind_is_refused_without_importing(saved):
    p = writable(saved / "intelligence.json")
    data = json.dumps({"kind": "pickle", "module": "os", "attr": "system"}).encode()
    p.write_bytes(data)
    m = json.loads((saved / "manifest.json").read_text())
    import hashlib

    m["files"]["intelligence.json"] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    m["digest"] = _manifest_digest(m)
    writable(saved / "manifest.json").write_text(json.dumps(m))
    assert refused(saved) == "intelligence"


def other_system(phishing, **changes) -> System:
    kw = dict(
        context=phishing.schema.fields,
        schema_version=phishing.schema_version,
        unit=phishing.unit,
        features={f.name: f.expr for f in phishing.features.features},
        actions=list(phishing.actions),
        experience=phishing.experience,
        labels=phishing.labels,
    )
    name = changes.pop("name", "phishing")
    kw.update(changes)
    return System(name, **kw)


def test_another_systems_bundle(phishing, saved):
    assert refused(saved, other_system(phishing, name="spam")) == "system"


def test_another_schema_version(phishing, saved):
    assert refused(saved, other_system(phishing, schema_version="2")) == "schema_version"


def test_bundle_built_for_other_features(phishing, saved):
    feats = {f.name: f.expr for f in phishing.features.features}
    feats["young_domain"] = F.col("domain_age_days") < 60
    assert refused(saved, other_system(phishing, features=feats)) == "features"


def test_thresholds_that_do_not_fit_the_experience(phishing, saved):
    exp = Thresholds("phish", {"block": 0.9, "quarantine": 0.7, "warn": 0.6}, otherwise="allow")
    sys2 = other_system(phishing, actions=["allow", "warn", "quarantine", "block"], experience=exp)
    assert refused(saved, sys2) == "thresholds"


def test_verify_without_a_system_checks_integrity_only(phishing, saved):
    assert verify_bundle(saved).version == Bundle.load(saved, phishing).version


def test_build_validates_against_the_system(phishing):
    from closedloop import SpecError

    with pytest.raises(SpecError, match="exactly the actions"):
        Bundle.build(phishing, model(phishing), thresholds={"block": 0.9})
    with pytest.raises(SpecError, match="strictly decrease"):
        Bundle.build(phishing, model(phishing), thresholds={"block": 0.5, "warn": 0.6})
    with pytest.raises(SpecError, match="does not produce"):
        Bundle.build(phishing, LogisticModel({"rank_log": 1.0}, output="spam"))


def test_a_failed_save_leaves_nothing_behind(phishing, tmp_path, monkeypatch):
    bundle = Bundle.build(phishing, model(phishing))

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "rename", boom)
    with pytest.raises(OSError):
        bundle.save(tmp_path / "b")
    assert list(tmp_path.iterdir()) == []


def test_no_unpickling_anywhere_in_the_package():
    src = Path(__file__).resolve().parents[2] / "src" / "closedloop"
    for p in src.rglob("*.py"):
        text = p.read_text()
        for needle in ("import pickle", "pickle.load", "joblib", "cloudpickle", "import dill"):
            assert needle not in text, f"{needle} in {p}"


def test_copying_a_bundle_keeps_it_valid(phishing, saved, tmp_path):
    shutil.copytree(saved, tmp_path / "copy")
    assert Bundle.load(tmp_path / "copy", phishing).version == Bundle.load(saved).version


def test_a_new_optional_field_with_unchanged_features_keeps_bundles_compatible(phishing, saved):
    fields = [*phishing.schema.fields, Str("extra", default="")]
    s2 = other_system(phishing, context=fields)
    # The bundle depends on the schema version and the feature definitions, not on every field.
    assert Bundle.load(saved, s2).version


def test_a_maliciously_deep_intelligence_document_is_refused(saved):
    import hashlib

    data = (b'{"kind": "lookup_table", "fallback": ' * 100_000) + b"null" + b"}" * 100_000
    p = writable(saved / "intelligence.json")
    p.write_bytes(data)
    m = json.loads((saved / "manifest.json").read_text())
    m["files"]["intelligence.json"] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    m["digest"] = _manifest_digest(m)
    writable(saved / "manifest.json").write_text(json.dumps(m))
    assert refused(saved) == "intelligence"
