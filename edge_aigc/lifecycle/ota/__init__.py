"""Over-the-air installs: a bundle received in chunks (or fetched from a URL), verified,
smoke-tested, then activated. No transport here: a front end (the MQTT one, serve's
``mqtt_frontend``) drives the :class:`Installer` and speaks for it.

One install is one job, named by the request's id (docs/deploy.md, "Updating devices")::

    install request ─► queued ─► downloading ─► verifying ─► activating ─► succeeded
                                     │               │             └─────► rolled-back
                                     └───────────────┴───────────────────► failed

- **downloading** (receive.py): the device asks for chunks a window at a time (``need``
  events); a chunk whose digest or length is wrong is dropped and asked for again; so is every
  missing one when nothing arrived for ``limits.ota_retry_s``. Chunks go straight to
  ``<state>/ota/<job>/bundle.part`` and a one-byte-per-chunk map, so a job resumes where it
  stopped after a broker or device restart.
- **verifying** (verify.py): size, whole-file sha256, the profile's bundle budget, then the
  store's own install (archive safety, every file's hash, the Ed25519 signature against the
  device's pinned key) as an inactive version, the RSS budget, and the smoke generation and
  fidelity spot check (edge_aigc/lifecycle/smoke.py) on that version in a runtime of its own.
- **activating** (installer.py): the store switches its active version (one atomic rename)
  and the serving runtime swaps the model between two requests, so a request in flight
  finishes on the version it started on and the old version serves until then.

Any refusal removes what the job installed; a failure after the switch rolls the store
back. Every state change is written to ``job.json`` (job.py: versioned records) before it is
announced, and every step is safe to run twice, so a job killed anywhere is finished on the
next start.
"""
from .book import InstallEvents
from .installer import CRASH_ENV, CRASH_POINTS, Installer
from .job import CHUNK_BYTES, InstallJob, InstallSpec

__all__ = ["CHUNK_BYTES", "CRASH_ENV", "CRASH_POINTS", "InstallEvents", "InstallJob", "InstallSpec", "Installer"]
