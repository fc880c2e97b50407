"""Device model store: atomic installs, activation, rollback, removal."""
from __future__ import annotations

import hashlib
import tarfile

import pytest

from edge_aigc import ModelStore
from edge_aigc.bundle import signing
from edge_aigc.errors import (CorruptBundle, IntegrityError, SignatureError, StoreError, UnknownModel,
                              UnsafeBundle)


def snapshot(root):
    """Every path under root with a hash of its content: 'the store exactly as it was'."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            if p.is_file() else "dir" for p in sorted(root.rglob("*"))}


@pytest.fixture
def store(tmp_path):
    return ModelStore(tmp_path / "state")


def test_install_makes_the_model_active_and_loadable(store, make_bundle):
    m = store.install(make_bundle(version="1.0.0"))
    assert (m.name, m.version, m.active) == ("tiny-gen", "1.0.0", True)
    with store.open("tiny-gen") as b:
        assert b.manifest.version == "1.0.0" and b.file("model.onnx").is_file()
    assert [(x.version, x.active) for x in store.list()] == [("1.0.0", True)]


def test_new_version_becomes_active_and_rollback_restores_the_previous(store, make_bundle):
    store.install(make_bundle(version="1.0.0"))
    store.install(make_bundle(version="1.1.0"))
    assert store.open("tiny-gen").manifest.version == "1.1.0"
    assert store.rollback("tiny-gen") == "1.0.0"
    assert store.open("tiny-gen").manifest.version == "1.0.0"
    assert store.rollback("tiny-gen") == "1.1.0", "rolling back twice returns to the newer one"


def test_only_active_and_previous_versions_are_kept(store, make_bundle):
    for v in ("1.0.0", "1.1.0", "1.2.0"):
        store.install(make_bundle(version=v))
    assert sorted(m.version for m in store.versions("tiny-gen")) == ["1.1.0", "1.2.0"]


def test_rollback_without_previous_version_is_refused(store, make_bundle):
    store.install(make_bundle())
    with pytest.raises(StoreError, match="no previous version"):
        store.rollback("tiny-gen")


@pytest.mark.parametrize("damage", ["tampered", "truncated", "unsafe", "unsigned"])
def test_failed_install_leaves_the_store_exactly_as_it_was(tmp_path, make_bundle, keypair, damage):
    store = ModelStore(tmp_path / "state", public_key=signing.load_public_key(keypair[1]),
                       require_signature=True)
    store.install(make_bundle(version="1.0.0", key=keypair[0]))
    before = snapshot(store.root)
    bad = tmp_path / "bad.eaigc"
    good = make_bundle(version="2.0.0", key=keypair[0], compress=False)
    if damage == "tampered":
        data = bytearray(good.read_bytes())
        data[data.index(b"\x00\x01\x02\x03")] ^= 0xFF  # first byte of model.onnx's content
        bad.write_bytes(bytes(data))
        expected = IntegrityError
    elif damage == "truncated":
        data = good.read_bytes()
        bad.write_bytes(data[: len(data) // 2])
        expected = CorruptBundle
    elif damage == "unsafe":
        with tarfile.open(good) as src, tarfile.open(bad, "w") as dst:
            for m in src.getmembers():
                dst.addfile(m, src.extractfile(m))
            link = tarfile.TarInfo("model2.onnx")
            link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
            dst.addfile(link)
        expected = UnsafeBundle
    else:
        bad = make_bundle(version="2.0.0")
        expected = SignatureError
    with pytest.raises(expected):
        store.install(bad)
    assert snapshot(store.root) == before
    assert store.open("tiny-gen").manifest.version == "1.0.0"


def test_reinstalling_the_same_bundle_is_a_no_op(store, make_bundle):
    path = make_bundle()
    store.install(path)
    before = snapshot(store.root)
    store.install(path)
    assert snapshot(store.root) == before


def test_same_version_with_different_content_is_refused(store, make_bundle):
    store.install(make_bundle(version="1.0.0"))
    with pytest.raises(StoreError, match="already installed with different content"):
        store.install(make_bundle(version="1.0.0", files={"model.onnx": b"other weights"}))


def test_install_without_activating_keeps_the_current_version(store, make_bundle):
    store.install(make_bundle(version="1.0.0"))
    m = store.install(make_bundle(version="2.0.0"), activate=False)
    assert not m.active and store.open("tiny-gen").manifest.version == "1.0.0"
    store.activate("tiny-gen", "2.0.0")
    assert store.open("tiny-gen").manifest.version == "2.0.0"


def test_activating_a_version_that_is_not_installed_is_refused(store, make_bundle):
    store.install(make_bundle(version="1.0.0"))
    with pytest.raises(StoreError, match=r"9.9 is not installed \(installed versions: 1.0.0\)"):
        store.activate("tiny-gen", "9.9")


def test_remove_refuses_the_active_version_and_removes_the_rest(store, make_bundle):
    store.install(make_bundle(version="1.0.0"))
    store.install(make_bundle(version="2.0.0"))
    with pytest.raises(StoreError, match="is active"):
        store.remove("tiny-gen", "2.0.0")
    store.remove("tiny-gen", "1.0.0")
    with pytest.raises(StoreError, match="no previous version"):
        store.rollback("tiny-gen")
    store.remove("tiny-gen")
    assert store.list() == []
    with pytest.raises(UnknownModel, match="not installed"):
        store.open("tiny-gen")


def test_file_changed_after_install_is_caught_when_opened(store, make_bundle):
    m = store.install(make_bundle())
    (m.path / "labels.txt").write_bytes(b"a\nb\nc\n")
    with pytest.raises(IntegrityError, match="labels.txt"):
        store.open("tiny-gen")
