"""Bundles in the registry's database (closedloop.registry.store_db) on SQLite and on a real
PostgreSQL server, and a host's read-through cache of them (CachedBundleStore): a bundle round-trips
byte for byte (in parts too); storing it again is a no-op and another bundle under its version is
refused; a row altered in the database, a missing part, a manifest naming another version and a
missing version are refused naming the file and the check; the cache fetches once, then serves its
own copy, and two workers fetching at once end up with one copy; two homes sharing one PostgreSQL
registry: a bundle deployed from home A serves from home B with nothing copied, and one registered
before the registry kept bundles is uploaded by its next deploy from the home that holds it."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from closedloop import Bundle
from closedloop.errors import BundleError, RegistryError
from closedloop.registry import Registry, store_db
from closedloop.registry.db import Database
from closedloop.registry.models import bundle_files as T
from closedloop.registry.store import CachedBundleStore, FileBundleStore
from closedloop.registry.store_db import DatabaseBundleStore
from closedloop.runtime.clock import SystemClock
from closedloop.runtime.signing import SigningKey


@pytest.fixture(scope="module")
def key():
    return SigningKey.generate()


@pytest.fixture(scope="module")
def bundle(phishing, key):
    from examples.phishing.heuristic import heuristic_intelligence

    return Bundle.build(phishing, heuristic_intelligence(), metrics={"note": "first"}).signed(key)


@pytest.fixture
def db(registry_url):
    d = Database(registry_url, SystemClock())
    d.open()
    yield d
    d.close()


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _rows(db: Database, version: str) -> int:
    with db.read() as conn:
        return int(conn.execute(select(func.count()).select_from(T).where(T.c.version == version)).scalar_one())


def _alter(db: Database, version: str, path: str, **values: object) -> None:
    with db.write() as conn:
        assert conn.execute(update(T).where(T.c.version == version, T.c.path == path, T.c.part == 0).values(**values)).rowcount == 1


def test_a_bundle_round_trips_byte_for_byte_in_parts_too(db, bundle, phishing, tmp_path, monkeypatch):
    store = DatabaseBundleStore(db)
    assert not store.exists(bundle.version)
    store.put(bundle)
    assert store.exists(bundle.version) and _rows(db, bundle.version) == 3  # manifest, signature, intelligence
    saved = _tree(bundle.save(tmp_path / "saved"))
    assert store.files(bundle.version) == saved == bundle.file_bytes()
    loaded = store.load(bundle.version, phishing)
    assert loaded.manifest == bundle.manifest and loaded.signature == bundle.signature and loaded.path is None
    assert _tree(loaded.save(tmp_path / "again")) == saved
    assert store.header(bundle.version) == (bundle.manifest, bundle.signature)

    monkeypatch.setattr(store_db, "PART_BYTES", 64)  # every file in several parts
    small = Bundle.build(phishing, bundle.intelligence, thresholds={"block": 0.9, "warn": 0.5})
    store.put(small)
    sizes = {p: len(b) for p, b in small.file_bytes().items()}
    assert _rows(db, small.version) == sum(-(-n // 64) for n in sizes.values()) > 2 * len(sizes)
    assert store.files(small.version) == small.file_bytes()
    assert store.load(small.version).content_digest == small.content_digest
    assert store.header(small.version)[1] is None  # unsigned


def test_put_is_idempotent_by_content_and_refuses_another_bundle_under_a_stored_version(db, bundle, phishing):
    store = DatabaseBundleStore(db)
    store.put(bundle)
    store.put(bundle)
    rebuilt = Bundle.build(phishing, bundle.intelligence, metrics={"note": "rebuilt later"})  # same content
    assert rebuilt.version == bundle.version and rebuilt.manifest["digest"] != bundle.manifest["digest"]
    store.put(rebuilt)  # the stored bundle: a no-op
    assert _rows(db, bundle.version) == 3 and store.load(bundle.version).metrics == {"note": "first"}
    other = Bundle.build(phishing, bundle.intelligence, thresholds={"block": 0.8, "warn": 0.4}, version=bundle.version)
    with pytest.raises(RegistryError, match=f"already holds a different bundle under version '{bundle.version}'"):
        store.put(other)
    assert store.load(bundle.version).content_digest == bundle.content_digest


def test_concurrent_puts_of_one_bundle_store_it_once(db, bundle):
    stores = [DatabaseBundleStore(db) for _ in range(4)]
    start = threading.Barrier(len(stores))
    errors: list[BaseException] = []

    def put(s: DatabaseBundleStore) -> None:
        start.wait()
        try:
            s.put(bundle)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=put, args=(s,)) for s in stores]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == [] and _rows(db, bundle.version) == 3


def test_altered_rows_are_refused_naming_the_file_and_the_check(db, bundle):
    store = DatabaseBundleStore(db)
    store.put(bundle)
    v = bundle.version
    good = bundle.file_bytes()["intelligence.json"]
    _alter(db, v, "intelligence.json", data=good.replace(b"0", b"1", 1))  # bytes changed, the row's sha256 not
    for read in (store.load, store.files):
        with pytest.raises(BundleError) as err:
            read(v)
        assert err.value.check == "checksum" and "'intelligence.json'" in err.value.detail and "database" in str(err.value)
        assert v in str(err.value)
    import hashlib

    forged = good.replace(b"0", b"1", 1)  # the row made consistent again: the manifest's sha256 refuses it
    _alter(db, v, "intelligence.json", data=forged, sha256=hashlib.sha256(forged).hexdigest())
    with pytest.raises(BundleError) as err:
        store.load(v)
    assert err.value.check == "checksum" and "the manifest says" in err.value.detail
    with pytest.raises(RegistryError, match="fails verification"):  # never overwritten, even by the good bundle
        store.put(bundle)
    _alter(db, v, "intelligence.json", data=good[:-1])  # truncated
    with pytest.raises(BundleError) as err:
        store.files(v)
    assert err.value.check == "file_size" and "'intelligence.json'" in err.value.detail

    manifest = bundle.file_bytes()["manifest.json"]
    _alter(db, v, "manifest.json", data=manifest.replace(b'"first"', b'"edited"'),
           sha256=hashlib.sha256(manifest.replace(b'"first"', b'"edited"')).hexdigest(), size=len(manifest) + 1)
    with pytest.raises(BundleError) as err:
        store.header(v)
    assert err.value.check == "manifest_digest"


def test_a_missing_version_part_or_a_misnamed_manifest_is_refused(db, bundle, phishing, monkeypatch):
    store = DatabaseBundleStore(db)
    for read in (store.load, store.files, store.header):
        with pytest.raises(BundleError, match="no bundle is stored under this version") as err:
            read("phishing-000000000000")
        assert err.value.check == "path" and "'phishing-000000000000'" in str(err.value)
    with pytest.raises(RegistryError, match="non-empty name without '/'"):
        store.exists("../x")
    monkeypatch.setattr(store_db, "PART_BYTES", 64)
    store.put(bundle)
    with db.write() as conn:
        conn.execute(T.delete().where(T.c.version == bundle.version, T.c.path == "manifest.json", T.c.part == 1))
    with pytest.raises(BundleError) as err:
        store.load(bundle.version)
    assert err.value.check == "file_size" and "'manifest.json' is stored in parts" in err.value.detail
    # a bundle's rows copied under another version: its manifest names the version it was built as
    other = Bundle.build(phishing, bundle.intelligence, thresholds={"block": 0.7, "warn": 0.3})
    store.put(other)
    with db.write() as conn:
        rows = conn.execute(select(T).where(T.c.version == other.version)).mappings().all()
        conn.execute(T.insert(), [{**r, "version": "phishing-renamed"} for r in rows])
    with pytest.raises(BundleError, match="names version") as err:
        store.load("phishing-renamed")
    assert err.value.check == "manifest"


def test_the_cache_fetches_once_then_serves_its_own_copy(db, bundle, tmp_path):
    shared = DatabaseBundleStore(db)
    shared.put(bundle)
    local = FileBundleStore(tmp_path / "bundles")
    cache = CachedBundleStore(local, shared)
    assert cache.exists(bundle.version) and not local.exists(bundle.version)
    assert cache.header(bundle.version) == (bundle.manifest, bundle.signature)  # fetched here
    assert _tree(local.path(bundle.version)) == bundle.file_bytes()  # byte for byte
    assert cache.fetch(bundle.version) is False
    with db.write() as conn:  # the shared copy gone: the local one serves
        conn.execute(T.delete().where(T.c.version == bundle.version))
    assert cache.load(bundle.version).content_digest == bundle.content_digest
    assert cache.share(bundle.version) is True and shared.exists(bundle.version)  # uploaded back
    assert cache.share(bundle.version) is False
    with pytest.raises(RegistryError, match="'local' parameter of CachedBundleStore"):
        CachedBundleStore(shared, shared)  # type: ignore[arg-type]
    with pytest.raises(RegistryError, match="'shared' parameter of CachedBundleStore"):
        CachedBundleStore(local, cache)


def test_two_workers_fetching_at_once_end_up_with_one_verified_copy(db, bundle, tmp_path):
    shared = DatabaseBundleStore(db)
    shared.put(bundle)
    caches = [CachedBundleStore(FileBundleStore(tmp_path / "bundles"), shared) for _ in range(4)]
    start = threading.Barrier(len(caches))
    got: list[object] = []

    def load(c: CachedBundleStore) -> None:
        start.wait()
        try:
            got.append(c.load(bundle.version).content_digest)
        except BaseException as exc:  # noqa: BLE001 - reported below
            got.append(exc)

    threads = [threading.Thread(target=load, args=(c,)) for c in caches]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert got == [bundle.content_digest] * 4
    assert sorted(p.name for p in (tmp_path / "bundles").iterdir()) == [bundle.version]  # no temporary left


def test_the_cache_refuses_an_altered_row_and_keeps_nothing(db, bundle, tmp_path):
    shared = DatabaseBundleStore(db)
    shared.put(bundle)
    _alter(db, bundle.version, "signature.json", data=b"{}", size=2)
    cache = CachedBundleStore(FileBundleStore(tmp_path / "bundles"), shared)
    with pytest.raises(BundleError) as err:
        cache.load(bundle.version)
    assert err.value.check == "checksum" and "'signature.json'" in err.value.detail
    assert not (tmp_path / "bundles").exists() or list((tmp_path / "bundles").iterdir()) == []


def test_the_default_store_caches_the_database_with_postgresql_only(postgres, tmp_path):
    sqlite = Registry(f"sqlite:///{tmp_path / 'r.sqlite'}", tmp_path / "bundles")
    assert type(sqlite.store) is FileBundleStore and sqlite.store.root == tmp_path / "bundles"
    pg = Registry(postgres.database(), tmp_path / "bundles")
    assert isinstance(pg.store, CachedBundleStore) and pg.store.local.root == tmp_path / "bundles"
    assert isinstance(pg.store.shared, DatabaseBundleStore) and pg.store.shared.db is pg.db
    assert "table bundle_files" in pg.store.describe() and "bundles" in pg.store.describe()


def test_two_homes_sharing_one_postgresql_registry_need_no_copy(postgres, phishing, bundle, key, tmp_path):
    url = postgres.database()
    a, b = tmp_path / "home-a" / "bundles", tmp_path / "home-b" / "bundles"
    with Registry(url, a) as ra, Registry(url, b) as rb:
        ra.trust_key(key.public_key, name="tests", actor="alice")
        ra.deploy(phishing, bundle, actor="alice", reason="first production", force="store test")
        assert not (b / bundle.version).exists()
        dep = rb.deployment(phishing)  # fetched from the database into home B's files, verified
        assert dep.production.version == bundle.version and dep.production.path == b / bundle.version
        assert _tree(b / bundle.version) == _tree(a / bundle.version)

        # a bundle registered before the registry kept bundles: only in home A's files
        legacy = Bundle.build(phishing, bundle.intelligence, thresholds={"block": 0.95, "warn": 0.6}).signed(key)
        with Registry(url, FileBundleStore(a)) as old:
            old.add_bundle(legacy, actor="alice")
        assert not DatabaseBundleStore(ra.db).exists(legacy.version)
        with pytest.raises(BundleError, match="no bundle is stored under this version"):
            rb.load_bundle(legacy.version)
        ra.deploy(phishing, legacy.version, actor="alice", reason="the legacy bundle", force="store test")  # uploads it
        assert rb.deployment(phishing).production.version == legacy.version
        assert _tree(b / legacy.version) == _tree(a / legacy.version)
