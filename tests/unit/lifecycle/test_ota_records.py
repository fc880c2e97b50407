"""Install job records across releases: today's (version 1) records are read and migrated, a
newer or corrupt record is kept aside rather than lost, and a device upgraded in the middle of
an install finishes the job from its old record and answers where the old record says."""
from __future__ import annotations

import hashlib
import json
import os

import pytest

from edge_aigc.contract import JobState
from edge_aigc.device.records import RecordError, load_record, save_record
from edge_aigc.lifecycle.ota.job import RECORD, RECORD_VERSION, InstallSpec, load_job, save_job
from tests.helpers.ota import device, versioned
from tests.helpers.service import Listener, running_service
from tests.helpers.ota import served_version

# A record exactly as the release of 2026-12-07 wrote it (version 1: no wrapper, MQTT's fields).
V1 = {"spec": {"sha256": "ab" * 32, "size": 200000, "activate": True, "chunk_bytes": 65536, "url": None},
      "id": "job-7", "reply_to": "edge-aigc/clients/host-1/res/job-7", "correlation": "0a0b",
      "state": "verifying", "model": "digits", "version": "2.0.0", "previous": "1.0.0", "activated": False,
      "installed_new": True, "step": None, "code": None, "reason": None, "created": 1796000000.25,
      "seconds": None}


def test_a_version_1_record_is_migrated_and_saved_as_the_current_version(tmp_path):
    (tmp_path / RECORD).write_text(json.dumps(V1, indent=1) + "\n")
    job = load_job(tmp_path)
    assert job.reply == {"topic": "edge-aigc/clients/host-1/res/job-7", "correlation": "0a0b"}
    assert (job.id, job.state, job.model, job.version, job.previous) == ("job-7", "verifying", "digits",
                                                                       "2.0.0", "1.0.0")
    assert job.spec == InstallSpec("ab" * 32, 200000, True, 65536, None) and job.installed_new
    save_job(job)
    saved = json.loads((tmp_path / RECORD).read_text())
    assert saved["version"] == RECORD_VERSION and "reply_to" not in saved["data"]
    again = load_job(tmp_path)
    assert (again.reply, again.created, again.spec) == (job.reply, job.created, job.spec)


def test_a_record_without_a_later_field_takes_its_default_and_unknown_fields_are_ignored(tmp_path):
    old = {k: v for k, v in V1.items() if k != "seconds"}
    (tmp_path / RECORD).write_text(json.dumps({**old, "from_the_future": 1}))
    job = load_job(tmp_path)
    assert job.seconds is None and job.id == "job-7"


@pytest.mark.parametrize("content", ['{"version": 99, "data": {}}', "{not json", "[1, 2]",
                                     '{"version": "2", "data": {}}'])
def test_a_record_this_release_cannot_read_is_kept_aside_not_lost(tmp_path, content):
    (tmp_path / RECORD).write_text(content)
    with pytest.raises(RecordError, match="kept as job.json.bad"):
        load_job(tmp_path)
    assert not (tmp_path / RECORD).exists() and (tmp_path / (RECORD + ".bad")).read_text() == content


def test_records_are_written_whole(tmp_path):
    path = tmp_path / "r.json"
    save_record(path, 3, {"a": 1})
    assert load_record(path, 3, {}) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]  # no temporary file left


def test_a_device_upgraded_mid_install_finishes_the_job_from_its_old_record(broker, bundles, tmp_path):
    """The part file is complete and the version-1 record says verifying: the new release
    checks, activates and answers on the record's reply topic."""
    v1 = versioned(bundles["image"], tmp_path, "1.0.0")
    v2 = versioned(bundles["image"], tmp_path, "2.0.0").read_bytes()
    cfg = device(tmp_path, broker.port, "ota-upgraded", [v1])
    job_dir = tmp_path / "state-ota-upgraded" / "ota" / "job-up"
    job_dir.mkdir(parents=True)
    spec = {"sha256": hashlib.sha256(v2).hexdigest(), "size": len(v2), "activate": True, "chunk_bytes": 65536,
            "url": None}
    chunks = -(-len(v2) // 65536)
    (job_dir / "bundle.part").write_bytes(v2)
    (job_dir / "chunks.map").write_bytes(b"\x01" * chunks)
    reply = "edge-aigc/clients/host-9/res/job-up"
    (job_dir / RECORD).write_text(json.dumps({**V1, "spec": spec, "id": "job-up", "reply_to": reply,
                                              "correlation": None, "state": JobState.VERIFYING, "model": None,
                                              "version": None, "previous": None, "installed_new": False}))
    listener = Listener(broker, [reply])
    try:
        with running_service(cfg):
            result = json.loads(listener.next(topic=reply, event="result", timeout=60).payload)
            assert (result["state"], result["version"], result["previous"]) == ("succeeded", "2.0.0", "1.0.0")
            assert served_version(broker, "ota-upgraded") == "2.0.0"
    finally:
        listener.close()
    saved = json.loads((job_dir / RECORD).read_text())
    assert saved["version"] == RECORD_VERSION and saved["data"]["reply"] == {"topic": reply}
    assert not os.path.exists(job_dir / "bundle.part")
