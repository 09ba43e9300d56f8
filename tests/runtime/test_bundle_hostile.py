"""Hostile bundles: a bundle never executes code when it is loaded or verified.

Each case forges a bundle the way a capable attacker would — a real bundle of a small fitted
scikit-learn model, its skops file edited, the trust lists of intelligence.json and the manifest
widened to match, every checksum and the manifest digest recomputed — or plants links, pipes
and oversized files in a bundle directory. Each must be refused with a closedloop error, through
``Bundle.load`` and through the CLI (``bundle verify``, ``bundle inspect``, ``decide``), and the
payload's marker file must never appear.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
from sklearn.tree import DecisionTreeClassifier
from typer.testing import CliRunner

from closedloop import Bundle, BundleError
from closedloop.cli.main import app
from closedloop.errors import ClosedLoopError
from closedloop.intelligence import SklearnModel
from closedloop.runtime.bundle import _manifest_digest

runner = CliRunner()


# -- a real bundle, and the tools of a forger --------------------------------------------------


@pytest.fixture(scope="module")
def model(phishing):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, len(phishing.features.names)))
    y = (X[:, 0] + X[:, 3] > 0).astype(int)
    return SklearnModel(DecisionTreeClassifier(max_depth=3, random_state=0).fit(X, y), list(phishing.features.names), "phish")


@pytest.fixture
def bundle(phishing, model, tmp_path) -> Path:
    return Bundle.build(phishing, model).save(tmp_path / "b")


@pytest.fixture
def marker(tmp_path) -> Path:
    return tmp_path / "PWNED"


def writable(p: Path) -> Path:
    os.chmod(p, 0o644)
    return p


def rewrite(path: Path, files: dict[str, bytes], trusted: list[str] = ()) -> None:
    """Replace or add bundle files, widen both trust lists by ``trusted``, recompute every
    checksum and the manifest digest."""
    spec = json.loads((path / "intelligence.json").read_text())
    if trusted:
        spec["trusted"] = sorted(set(spec["trusted"]) | set(trusted))
        files = {**files, "intelligence.json": json.dumps(spec).encode()}
    m = json.loads((path / "manifest.json").read_text())
    m["intelligence"]["trusted_types"] = sorted(set(m["intelligence"]["trusted_types"]) | set(trusted))
    for name, data in files.items():
        p = path / name
        if p.exists():
            writable(p)
        p.write_bytes(data)
        m["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    m["digest"] = _manifest_digest(m)
    writable(path / "manifest.json").write_text(json.dumps(m))


def skops_members(path: Path) -> tuple[str, dict[str, bytes]]:
    name = json.loads((path / "intelligence.json").read_text())["model"]
    with zipfile.ZipFile(io.BytesIO((path / name).read_bytes())) as z:
        return name, {i.filename: z.read(i.filename) for i in z.infolist()}


def zipped(members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=compression) as z:
        for n, d in members.items():
            z.writestr(n, d)
    return buf.getvalue()


def forge(path: Path, node: dict, trusted: list[str]) -> None:
    """Add ``node`` as a new attribute of the saved estimator and trust ``trusted``."""
    name, members = skops_members(path)
    schema = json.loads(members["schema.json"])
    attrs = schema["content"]  # the estimator's attribute dict (a DictNode)
    attrs["content"]["_evil"] = node
    attrs["key_types"]["content"].append(type_node("builtins", "str"))
    members["schema.json"] = json.dumps(schema).encode()
    rewrite(path, {name: zipped(members)}, trusted)


# skops nodes, written by hand as an attacker would
def json_node(v):
    return {"__class__": "str", "__module__": "builtins", "__loader__": "JsonNode", "content": json.dumps(v), "is_json": True}


def type_node(module, name):
    return {"__class__": name, "__module__": module, "__loader__": "TypeNode"}


def list_node(items):
    return {"__class__": "list", "__module__": "builtins", "__loader__": "ListNode", "content": items}


def tuple_node(items):
    return {"__class__": "tuple", "__module__": "builtins", "__loader__": "TupleNode", "content": items}


def dict_node(d, key_types=None):
    kt = key_types if key_types is not None else [type_node("builtins", "str") for _ in d]
    return {"__class__": "dict", "__module__": "builtins", "__loader__": "DictNode", "content": d, "key_types": list_node(kt)}


def loss_call(module, name, args):
    """A LossNode: skops calls ``module.name(*args)`` as the loss's constructor."""
    return {
        "__class__": name, "__module__": module, "__loader__": "LossNode",
        "__reduce__": {"args": tuple_node(args)}, "content": dict_node({}),
    }


def reduce_call(module, name, args):
    """A ConstructorFromReduceNode: skops calls ``module.name(*args)``."""
    return {"__class__": name, "__module__": module, "__loader__": "ConstructorFromReduceNode", "content": tuple_node(args)}


def key_type_call(gadget, key):
    """A dict whose key type is ``gadget``: skops calls ``gadget(key)`` to rebuild the key."""
    return dict_node({key: json_node(1)}, key_types=[gadget])


class _Payload:  # what a hostile pickle holds: exec at unpickling
    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self):
        return (exec, (self.code,))


def touch(marker: Path) -> str:
    return f"open({str(marker)!r}, 'w').write('pwned')"


def gadget_runstring(marker, tmp_path, monkeypatch):
    node = loss_call("numpy.testing._private.utils", "runstring", [json_node(touch(marker)), dict_node({})])
    return node, ["numpy.testing._private.utils.runstring"]


def gadget_eval(marker, tmp_path, monkeypatch):
    return loss_call("builtins", "eval", [json_node(touch(marker))]), ["builtins.eval"]


def gadget_exec_by_reduce(marker, tmp_path, monkeypatch):
    return reduce_call("builtins", "exec", [json_node(touch(marker))]), ["builtins.exec"]


def gadget_os_system(marker, tmp_path, monkeypatch):
    return reduce_call("os", "system", [json_node(f"touch {marker}")]), ["os.system"]


def gadget_import_module(marker, tmp_path, monkeypatch):
    (tmp_path / "evil_module_for_closedloop.py").write_text(touch(marker) + "\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    node = key_type_call(type_node("importlib", "import_module"), "evil_module_for_closedloop")
    return node, ["importlib.import_module"]


def _pickle(marker, tmp_path) -> str:
    p = tmp_path / "payload.pkl"
    p.write_bytes(pickle.dumps(_Payload(touch(marker))))
    return str(p)


def gadget_numpy_load(marker, tmp_path, monkeypatch):
    node = loss_call("numpy", "load", [json_node(_pickle(marker, tmp_path)), json_node(None), json_node(True)])
    return node, ["numpy.load"]


def gadget_numpy_load_by_partial(marker, tmp_path, monkeypatch):
    partial = {
        "__class__": "partial", "__module__": "functools", "__loader__": "PartialNode",
        "content": {
            "func": {"__class__": "load", "__module__": "numpy", "__loader__": "FunctionNode"},
            "args": tuple_node([]), "kwds": dict_node({"allow_pickle": json_node(True)}), "namespace": json_node(None),
        },
    }
    return key_type_call(partial, _pickle(marker, tmp_path)), ["functools.partial", "numpy.load"]


def gadget_method(marker, tmp_path, monkeypatch):
    # a bound method of an allow-listed class; skops would call it as a key type
    obj = {"__class__": "RandomState", "__module__": "numpy.random.mtrand", "__loader__": "ObjectNode"}
    method = {
        "__class__": "RandomState", "__module__": "numpy.random.mtrand", "__loader__": "MethodNode",
        "content": {"func": "seed", "obj": obj},
    }
    return key_type_call(method, "1"), ["numpy.random.mtrand.RandomState", "numpy.random.mtrand.RandomState.seed"]


GADGETS = {
    f.__name__.removeprefix("gadget_"): f
    for f in (
        gadget_runstring, gadget_eval, gadget_exec_by_reduce, gadget_os_system, gadget_import_module,
        gadget_numpy_load, gadget_numpy_load_by_partial, gadget_method,
    )
}


def refused(path: Path, system=None) -> BundleError:
    with pytest.raises(BundleError) as err:
        Bundle.load(path, system)
    return err.value


# -- gadgets in the skops file -------------------------------------------------------------------


@pytest.mark.parametrize("widen", [True, False], ids=["trust-lists-widened", "trust-lists-as-built"])
@pytest.mark.parametrize("gadget", sorted(GADGETS))
def test_a_gadget_in_the_skops_file_is_refused_and_never_runs(phishing, bundle, marker, tmp_path, monkeypatch, gadget, widen):
    node, names = GADGETS[gadget](marker, tmp_path, monkeypatch)
    forge(bundle, node, names if widen else [])
    err = refused(bundle, phishing)
    assert err.check == "intelligence"
    assert not marker.exists()


def test_the_runstring_exploit_through_the_cli(phishing, bundle, marker, tmp_path, monkeypatch):
    node, names = gadget_runstring(marker, tmp_path, monkeypatch)
    forge(bundle, node, names)
    for args in (
        ["bundle", "verify", str(bundle)],
        ["bundle", "inspect", str(bundle)],
        ["decide", "--system", "examples.phishing.system:phishing", "--bundle", str(bundle)],
    ):
        result = runner.invoke(app, args, input="")
        assert result.exit_code == 1, (args, result.output)
        assert isinstance(result.exception, SystemExit), result.exception
        assert "Traceback" not in result.output and "runstring" in result.output
        assert not marker.exists()


def test_a_bundle_saved_before_the_exact_allow_list_still_loads(phishing, bundle):
    # older bundles listed only what skops reports as untrusted (not the arrays, dicts and
    # random states it loads natively): they stay loadable, for rollback
    import skops.io as sio

    from closedloop.intelligence.sklearn import skops_references

    name, members = skops_members(bundle)
    data = (bundle / name).read_bytes()
    old = sorted(sio.get_untrusted_types(data=data))
    assert set(old) < set(skops_references(data))
    spec = json.loads((bundle / "intelligence.json").read_bytes())
    spec["trusted"] = old
    rewrite(bundle, {"intelligence.json": json.dumps(spec).encode()})
    assert Bundle.load(bundle, phishing).intelligence.trusted == old


def test_an_unknown_node_kind_is_refused(phishing, bundle):
    forge(bundle, {"__class__": "dict", "__module__": "builtins", "__loader__": "EvalNode", "content": "1"}, [])
    assert "EvalNode" in refused(bundle, phishing).detail


@pytest.mark.parametrize(
    "case", ["not-a-zip", "no-schema", "schema-not-json", "other-protocol", "compressed", "too-deep", "missing-array"]
)
def test_an_unparseable_skops_file_is_refused(phishing, bundle, case):
    name, members = skops_members(bundle)
    schema = json.loads(members["schema.json"])
    compression = zipfile.ZIP_STORED
    if case == "not-a-zip":
        data = b"PK\x03\x04 not a zip at all"
    else:
        if case == "no-schema":
            del members["schema.json"]
        elif case == "schema-not-json":
            members["schema.json"] = b"{nope"
        elif case == "other-protocol":
            schema["protocol"] = 1
        elif case == "compressed":
            compression = zipfile.ZIP_DEFLATED
        elif case == "too-deep":
            deep = json_node(0)
            for _ in range(300):
                deep = list_node([deep])
            schema["content"]["content"]["_deep"] = deep
            schema["content"]["key_types"]["content"].append(type_node("builtins", "str"))
        elif case == "missing-array":
            del members[next(n for n in members if n.endswith(".npy"))]
        if case not in ("no-schema", "schema-not-json"):
            members["schema.json"] = json.dumps(schema).encode()
        data = zipped(members, compression)
    rewrite(bundle, {name: data})
    assert refused(bundle, phishing).check == "intelligence"


# -- the directory: sizes, links, pipes ----------------------------------------------------------


def bytes_read() -> int:
    """The bytes this process has read through read(2) and friends (Linux ``/proc/self/io``,
    ``rchar``: page-cache hits included) — what "nothing read" is measured by, rather than a
    wall-clock bound a loaded machine can break."""
    try:
        with open("/proc/self/io") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith("rchar:"))
    except OSError:
        pytest.skip("no /proc/self/io to count the bytes read")


def test_a_huge_sparse_manifest_is_refused_without_reading_it(bundle):
    os.truncate(writable(bundle / "manifest.json"), 300 * 2**20)
    before = bytes_read()
    err = refused(bundle)
    assert bytes_read() - before < 16 * 2**20  # nothing of the 300 MB read (counted, not timed)
    assert err.check == "size_limit" and "manifest.json" in err.detail


def test_a_listed_file_longer_than_declared_is_read_no_further(bundle):
    m = json.loads((bundle / "manifest.json").read_text())
    name = json.loads((bundle / "intelligence.json").read_text())["model"]
    with open(writable(bundle / name), "ab") as fh:  # a sparse tail of 300 MB
        fh.truncate(300 * 2**20)
    before = bytes_read()
    err = refused(bundle)
    assert bytes_read() - before < 16 * 2**20  # the sparse tail not read (counted, not timed)
    assert err.check == "file_size" and str(m["files"][name]["size"]) in err.detail


def test_a_bundle_declared_larger_than_the_limit_is_refused(bundle):
    m = json.loads((bundle / "manifest.json").read_text())
    m["files"]["intelligence.json"]["size"] = 3 * 2**30
    m["digest"] = _manifest_digest(m)
    writable(bundle / "manifest.json").write_text(json.dumps(m))
    assert refused(bundle).check == "size_limit"


def test_an_unlisted_symlinked_directory_is_refused(bundle, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x").write_text("x")
    os.symlink(outside, bundle / "linked")
    err = refused(bundle)
    assert err.check == "symlink" and "linked" in err.detail


def test_a_symlink_loop_is_refused(bundle):
    os.symlink("loop", bundle / "loop")
    os.mkdir(bundle / "d")
    os.symlink("../d", bundle / "d" / "up")  # a directory link back up: a cycle for a walker that follows
    assert refused(bundle).check == "symlink"


def test_a_listed_file_that_is_a_symlink_is_refused(bundle, tmp_path):
    real = tmp_path / "intelligence.json"
    real.write_bytes((bundle / "intelligence.json").read_bytes())
    writable(bundle / "intelligence.json").unlink()
    os.symlink(real, bundle / "intelligence.json")  # same bytes, same checksum: only the link differs
    assert refused(bundle).check == "symlink"


def test_a_symlinked_manifest_is_refused(bundle, tmp_path):
    real = tmp_path / "manifest.json"
    real.write_bytes((bundle / "manifest.json").read_bytes())
    writable(bundle / "manifest.json").unlink()
    os.symlink(real, bundle / "manifest.json")
    assert refused(bundle).check == "symlink"


def load_with_timeout(path: Path, seconds: float = 10.0) -> BaseException | None:
    box: list[BaseException | None] = []

    def run() -> None:
        try:
            Bundle.load(path)
            box.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            box.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), "loading the bundle blocked (it opened a FIFO)"
    return box[0]


def test_an_unlisted_fifo_is_refused_without_blocking(bundle):
    os.mkfifo(bundle / "pipe")
    err = load_with_timeout(bundle)
    assert isinstance(err, BundleError) and err.check == "file_type" and "pipe" in err.detail


def test_a_listed_file_replaced_by_a_fifo_is_refused_without_blocking(bundle):
    writable(bundle / "intelligence.json").unlink()
    os.mkfifo(bundle / "intelligence.json")
    err = load_with_timeout(bundle)
    assert isinstance(err, BundleError) and err.check == "file_type"


def test_a_fifo_manifest_is_refused_without_blocking(bundle):
    writable(bundle / "manifest.json").unlink()
    os.mkfifo(bundle / "manifest.json")
    err = load_with_timeout(bundle)
    assert isinstance(err, BundleError) and err.check == "file_type"


def test_an_unlisted_empty_directory_is_refused(bundle):
    os.mkdir(bundle / "extra")
    assert refused(bundle).check == "unlisted_file"


@pytest.mark.parametrize("case", ["fifo", "symlink", "loop"])
def test_the_cli_refuses_links_and_pipes(phishing, bundle, tmp_path, case):
    if case == "fifo":
        os.mkfifo(bundle / "pipe")
    elif case == "symlink":
        os.symlink(tmp_path, bundle / "up")
    else:
        os.symlink("loop", bundle / "loop")
    for args in (
        ["bundle", "verify", str(bundle)],
        ["bundle", "inspect", str(bundle)],
        ["decide", "--system", "examples.phishing.system:phishing", "--bundle", str(bundle)],
    ):
        box: list = []
        t = threading.Thread(target=lambda a=args, b=box: b.append(runner.invoke(app, a, input="")), daemon=True)
        t.start()
        t.join(20)
        assert not t.is_alive(), args
        result = box[0]
        assert result.exit_code == 1, (args, result.output)
        assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output


# -- signature.json: the one unlisted name ----------------------------------------------------------


def test_a_small_signature_beside_the_manifest_is_accepted(phishing, bundle):
    (bundle / "signature.json").write_text('{"parsed": "by closedloop.runtime.signing, not here"}')
    assert Bundle.load(bundle, phishing).version


@pytest.mark.parametrize("case", ["large", "symlink", "directory", "fifo"])
def test_a_signature_that_is_not_a_small_regular_file_is_refused(bundle, tmp_path, case):
    sig = bundle / "signature.json"
    if case == "large":
        sig.write_bytes(b" " * (2**20))
    elif case == "symlink":
        (tmp_path / "sig").write_text("{}")
        os.symlink(tmp_path / "sig", sig)
    elif case == "directory":
        sig.mkdir()
    else:
        os.mkfifo(sig)
    err = load_with_timeout(bundle)
    assert isinstance(err, ClosedLoopError) and isinstance(err, BundleError)
    assert err.check in {"large": ("size_limit",), "symlink": ("symlink",), "directory": ("unlisted_file", "file_type"),
                         "fifo": ("file_type",)}[case]


def test_the_runstring_exploit_through_the_servers_deploy_runs_nothing_and_leaves_nothing(
        phishing, bundle, marker, tmp_path, monkeypatch):
    """POST /v1/admin/deploy with the exploit: unsigned, it is refused by its signature before
    any of it is read; signed by the home's own key (a stolen key, an insider), it is refused by
    the allow-list. Either way nothing runs, nothing is registered, nothing is copied."""
    from examples.phishing.heuristic import heuristic_intelligence

    from closedloop import Client, ServiceError
    from closedloop.registry import Registry
    from closedloop.service import ServiceSettings, create_app
    from closedloop.service.auth import Credentials
    from closedloop.settings import Settings
    from support.service import serve_in_thread

    home = tmp_path / "home"
    token = Credentials(home / "credentials.json").add("ops", ["admin"])
    reg = Registry.from_settings(Settings(home=home)).open()
    key = reg.signing_key(home)
    production = Bundle.build(phishing, heuristic_intelligence(), thresholds={"block": 0.9, "warn": 0.5})
    reg.deploy(phishing, production.signed(key), actor="ops", reason="first", force="no report")
    node, names = gadget_runstring(marker, tmp_path, monkeypatch)
    forge(bundle, node, names)
    st = ServiceSettings(project=Settings(home=home), system="examples.phishing.system:phishing")
    with serve_in_thread(create_app(st, system=phishing)) as base, Client(base, token) as ops:
        with pytest.raises(ServiceError) as ei:
            ops.deploy(str(bundle), reason="unsigned exploit", shadow=True, force="x")
        assert ei.value.status == 422 and "signature" in str(ei.value.problem)
        manifest = json.loads((bundle / "manifest.json").read_text())
        (bundle / "signature.json").write_text(json.dumps(key.sign(manifest["digest"])))
        with pytest.raises(ServiceError) as ei:
            ops.deploy(str(bundle), reason="signed exploit", shadow=True, force="x")
        assert ei.value.status == 422 and "runstring" in str(ei.value.problem)
    assert not marker.exists()
    assert sorted(p.name for p in (home / "bundles").iterdir()) == [production.version]
    assert [b["version"] for b in reg.bundles(phishing)] == [production.version]
    assert [e["status"] for e in reg.history(phishing)] == ["applied", "refused", "refused"]
    reg.close()
