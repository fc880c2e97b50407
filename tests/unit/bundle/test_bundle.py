"""Bundle format: round trip, signatures, and every refusal with its own error."""
from __future__ import annotations

import io
import json
import tarfile

import pytest

from edge_aigc import load_bundle, pack_bundle
from edge_aigc.bundle import signing
from edge_aigc.bundle.archive import extract_archive
from edge_aigc.bundle.load import inspect_bundle
from edge_aigc.errors import (CorruptBundle, IntegrityError, SignatureError, UnsafeBundle,
                              UnsupportedSchema)
from tests.helpers import MODEL_BYTES, bundle_meta


def write_tar(path, entries, compress=False):
    """entries: list of TarInfo-or-(name, bytes). Builds archives our packer never would."""
    with tarfile.open(path, "w:gz" if compress else "w") as tar:
        for entry in entries:
            if isinstance(entry, tarfile.TarInfo):
                tar.addfile(entry)
            else:
                name, data = entry
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def valid_members(bundle_path):
    """(name, bytes) of every member of a good bundle, to rebuild variants of it."""
    with tarfile.open(bundle_path) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]


def test_packed_bundle_loads_with_manifest_and_files(make_bundle):
    path = make_bundle()
    with load_bundle(path) as b:
        assert b.manifest.name == "tiny-gen" and b.manifest.task == "image-generation"
        assert b.file("model.onnx").read_bytes() == MODEL_BYTES
        assert b.manifest.size_bytes == len(MODEL_BYTES) + 4
        assert b.signer is None
        root = b.root
    assert not root.exists(), "temp extraction dir is removed on close"


def test_packing_is_reproducible(tmp_path):
    files = {"model.onnx": MODEL_BYTES}
    meta = bundle_meta(created="2026-01-01T00:00:00+00:00")
    pack_bundle(tmp_path / "a.eaigc", meta, files)
    pack_bundle(tmp_path / "b.eaigc", meta, files)
    assert (tmp_path / "a.eaigc").read_bytes() == (tmp_path / "b.eaigc").read_bytes()


def test_uncompressed_bundle_also_loads(make_bundle):
    with load_bundle(make_bundle(compress=False)) as b:
        assert b.manifest.files["model.onnx"]


def test_signed_bundle_verifies_with_its_key(make_bundle, keypair):
    key, pub = keypair
    with load_bundle(make_bundle(key=key), public_key=signing.load_public_key(pub)) as b:
        assert b.signer == signing.key_id(signing.load_public_key(pub))


def test_signed_bundle_is_refused_with_another_key(make_bundle, keypair, other_keypair):
    path = make_bundle(key=keypair[0])
    with pytest.raises(SignatureError, match="does not verify"):
        load_bundle(path, public_key=signing.load_public_key(other_keypair[1]))


def test_unsigned_bundle_is_refused_when_signature_required(make_bundle, keypair):
    with pytest.raises(SignatureError, match="not signed"):
        load_bundle(make_bundle(), public_key=signing.load_public_key(keypair[1]))
    with pytest.raises(SignatureError, match="no public key"):
        load_bundle(make_bundle(key=keypair[0]), require_signature=True)


def test_bundle_with_one_changed_model_byte_is_refused(make_bundle, keypair, tmp_path):
    members = valid_members(make_bundle(key=keypair[0]))
    tampered = [(n, d[:100] + bytes([d[100] ^ 1]) + d[101:] if n == "model.onnx" else d)
                for n, d in members]
    path = write_tar(tmp_path / "tampered.eaigc", tampered)
    with pytest.raises(IntegrityError, match="'model.onnx' does not match its sha256"):
        load_bundle(path, public_key=signing.load_public_key(keypair[1]))


def test_bundle_with_edited_manifest_fails_signature(make_bundle, keypair, tmp_path):
    members = dict(valid_members(make_bundle(key=keypair[0])))
    manifest = json.loads(members["manifest.json"])
    manifest["recipe"] = "int8-dynamic"
    members["manifest.json"] = json.dumps(manifest).encode()
    path = write_tar(tmp_path / "edited.eaigc", list(members.items()))
    with pytest.raises(SignatureError):
        load_bundle(path, public_key=signing.load_public_key(keypair[1]))


def test_bundle_missing_a_listed_file_is_refused(make_bundle, tmp_path):
    members = [m for m in valid_members(make_bundle()) if m[0] != "labels.txt"]
    with pytest.raises(IntegrityError, match="'labels.txt' listed in the manifest is missing"):
        load_bundle(write_tar(tmp_path / "missing.eaigc", members))


def test_bundle_with_unlisted_file_is_refused(make_bundle, tmp_path):
    members = valid_members(make_bundle()) + [("extra.so", b"\x7fELF")]
    with pytest.raises(IntegrityError, match="'extra.so' is in the bundle but not in the manifest"):
        load_bundle(write_tar(tmp_path / "extra.eaigc", members))


def test_bundle_from_newer_schema_is_refused(make_bundle, tmp_path):
    members = dict(valid_members(make_bundle()))
    manifest = json.loads(members["manifest.json"])
    manifest["schema"] = 2
    manifest["new_field_of_schema_2"] = True
    members["manifest.json"] = json.dumps(manifest).encode()
    with pytest.raises(UnsupportedSchema, match="schema 2, newer than the 1"):
        load_bundle(write_tar(tmp_path / "future.eaigc", list(members.items())))


@pytest.mark.parametrize("compress", [False, True], ids=["tar", "tar.gz"])
@pytest.mark.parametrize("keep", [0.3, 0.6, 0.95])
def test_truncated_bundle_is_refused(make_bundle, tmp_path, compress, keep):
    data = make_bundle(compress=compress).read_bytes()
    cut = tmp_path / "cut.eaigc"
    cut.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(CorruptBundle, match="truncated|corrupt|not a tar"):
        load_bundle(cut)


def test_bundle_cut_exactly_between_members_is_refused(make_bundle, tmp_path):
    # tarfile itself accepts this silently: only the missing end-of-archive marker tells.
    path = make_bundle(compress=False)
    with tarfile.open(path) as tar:
        members = tar.getmembers()
        boundary = members[-1].offset  # header of the last member
    cut = tmp_path / "cut.eaigc"
    cut.write_bytes(path.read_bytes()[:boundary])
    with pytest.raises(CorruptBundle, match="truncated"):
        load_bundle(cut)


def test_file_that_is_not_an_archive_is_refused(tmp_path):
    junk = tmp_path / "junk.eaigc"
    junk.write_bytes(b"this is not a tar archive at all" * 40)
    with pytest.raises(CorruptBundle, match="not a tar archive"):
        load_bundle(junk)


def test_bundle_with_invalid_manifest_json_is_refused(tmp_path):
    path = write_tar(tmp_path / "badjson.eaigc", [("manifest.json", b"{not json")])
    with pytest.raises(CorruptBundle, match="not valid UTF-8 JSON"):
        load_bundle(path)


@pytest.mark.parametrize("field,value,message", [
    ("task", "video-generation", "'task'"),
    ("name", "../../etc", "'name'"),
    ("version", "..", "'version'"),
    ("files", {"/etc/passwd": "0" * 64}, "absolute path"),
    ("files", {"model.onnx": "not-a-sha"}, "no valid sha256"),
    ("size_bytes", "big", "'size_bytes'"),
])
def test_manifest_with_bad_field_is_refused(make_bundle, tmp_path, field, value, message):
    members = dict(valid_members(make_bundle()))
    manifest = json.loads(members["manifest.json"])
    manifest[field] = value
    members["manifest.json"] = json.dumps(manifest).encode()
    with pytest.raises(CorruptBundle, match=message):
        load_bundle(write_tar(tmp_path / "badfield.eaigc", list(members.items())))


def _info(name, kind, linkname=""):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info


@pytest.mark.parametrize("entry,message", [
    (("/etc/cron.d/evil", b"x"), "absolute path"),
    (("../escape.txt", b"x"), "contains '..'"),
    (("models/../../escape.txt", b"x"), "contains '..'"),
    (_info("link", tarfile.SYMTYPE, "/etc/shadow"), "is a link"),
    (_info("hard", tarfile.LNKTYPE, "manifest.json"), "is a link"),
    (_info("dev", tarfile.CHRTYPE), "device file"),
    (_info("blk", tarfile.BLKTYPE), "device file"),
    (_info("fifo", tarfile.FIFOTYPE), "device file or FIFO"),
])
def test_unsafe_archive_member_is_refused_before_anything_escapes(tmp_path, entry, message):
    path = write_tar(tmp_path / "evil.eaigc", [("manifest.json", b"{}"), entry], compress=True)
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(UnsafeBundle, match=message):
        extract_archive(path, dest)
    assert not (tmp_path / "escape.txt").exists()
    with pytest.raises(UnsafeBundle):
        load_bundle(path)


def test_duplicate_member_is_refused(tmp_path):
    path = write_tar(tmp_path / "dup.eaigc", [("model.onnx", b"a"), ("model.onnx", b"b")])
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(UnsafeBundle, match="appears twice"):
        extract_archive(path, dest)


def test_archive_expanding_past_the_cap_is_refused(tmp_path):
    # 8 MiB of zeros gzip to a few KiB: the cap is on what extraction would write.
    bomb = write_tar(tmp_path / "bomb.eaigc", [("model.onnx", bytes(8 << 20))], compress=True)
    assert bomb.stat().st_size < 64 << 10
    with pytest.raises(UnsafeBundle, match="expands past the 1,048,576-byte cap"):
        load_bundle(bomb, max_bytes=1 << 20)


def test_inspect_reads_manifest_without_verifying(make_bundle, keypair):
    info = inspect_bundle(make_bundle(key=keypair[0]))
    assert info.signed and info.manifest.recipe == "fp32"
    assert info.manifest.task_config["class_labels"] == ["a", "b"]


def test_pack_refuses_an_invalid_manifest(tmp_path):
    with pytest.raises(CorruptBundle, match="'task'"):
        pack_bundle(tmp_path / "x.eaigc", bundle_meta(task="nope"), {"m.onnx": b"x"})
    assert not (tmp_path / "x.eaigc").exists()


def test_gzip_trailer_corruption_is_refused(make_bundle, tmp_path):
    data = bytearray(make_bundle().read_bytes())
    data[-6] ^= 0xFF  # CRC32 trailer
    bad = tmp_path / "crc.eaigc"
    bad.write_bytes(bytes(data))
    with pytest.raises(CorruptBundle):
        load_bundle(bad)
