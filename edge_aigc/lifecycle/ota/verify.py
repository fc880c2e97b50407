"""The checks an installed bundle passes before it may serve, and undoing an install.

Each check is a step with a name (the ``step`` a failed job reports): ``size``, ``sha256`` and
``budget`` on the received file; ``signature``, ``contents`` and ``store`` in the store's own
install (archive safety, every file's hash, the Ed25519 signature against the device's pinned
key), as an inactive version; then the RSS ``budget`` and the smoke generation and fidelity
spot check (edge_aigc/lifecycle/smoke.py) in a runtime of its own. A failed check raises ``Rejected``.
"""
from __future__ import annotations

import logging
from pathlib import Path

from ...bundle.load import sha256_file
from ...errors import BundleError, Rejected, RequestError, SignatureError, StoreError
from ...device.profiles import Profile
from ..smoke import check_bundle
from ...bundle.store import InstalledModel, ModelStore
from ...device.system import rss_mb
from .job import InstallJob

__all__ = ["Checks"]

log = logging.getLogger(__name__)

MIB = 1 << 20


class Checks:
    def __init__(self, store: ModelStore, profile: Profile | None, threads: int | None):
        self.store, self.profile, self.threads = store, profile, threads

    def received(self, job: InstallJob, part: Path) -> None:
        """The file as announced, and within the profile's bundle budget."""
        size, spec = part.stat().st_size, job.spec
        if size != spec.size:
            raise Rejected("size", f"received {size} bytes, the install announced {spec.size}")
        digest = sha256_file(part)
        if digest != spec.sha256:
            raise Rejected("sha256", f"the bundle received hashes to {digest[:16]}…, not the announced "
                                     f"{spec.sha256[:16]}… (a chunk was altered, or the announcement is wrong)")
        budget = self.profile.budget if self.profile else None
        if budget and size > budget.max_bundle_mb * MIB:
            raise Rejected("budget", f"the bundle is {size / MIB:.1f} MB, over profile {self.profile.name}'s "
                                     f"{budget.max_bundle_mb} MB bundle budget")

    def install(self, part: Path) -> InstalledModel:
        """The store's own install, as an inactive version."""
        try:
            return self.store.install(part, activate=False)
        except SignatureError as exc:
            raise Rejected("signature", self._scrub(exc, part)) from None
        except BundleError as exc:
            raise Rejected("contents", self._scrub(exc, part)) from None
        except StoreError as exc:
            raise Rejected("store", self._scrub(exc, part)) from None

    def serves(self, installed: InstalledModel) -> None:
        """It fits beside what runs now, and it generates what its manifest promises."""
        m, budget = installed.manifest, self.profile.budget if self.profile else None
        if budget:
            estimate = (rss_mb() or 0.0) + m.size_bytes / MIB  # both versions are open during the switch
            if estimate > budget.max_rss_mb:
                raise Rejected("budget", f"serving {m.name} {m.version} beside what runs now needs about "
                                         f"{estimate:.0f} MB, over profile {self.profile.name}'s "
                                         f"{budget.max_rss_mb} MB RSS budget")
        check_bundle(installed.path, m, self.profile, self.threads)

    def _scrub(self, exc: Exception, part: Path) -> str:
        """An error's message without device paths."""
        return str(exc).replace(str(part), "the bundle").replace(str(self.store.root), "the store")

    def undo(self, job: InstallJob) -> None:
        """Remove a version this job installed and never activated."""
        if job.model and job.installed_new:
            try:
                if self.store.summary().get(job.model, {}).get("active") is None:
                    self.store.remove(job.model)
                else:
                    self.store.remove(job.model, job.version)
            except (StoreError, RequestError) as exc:
                log.error("install %s: could not remove %s %s: %s", job.id, job.model, job.version, exc)

    def restore(self, job: InstallJob) -> None:
        """After a failed switch: the previous version active again, the new one removed."""
        try:
            if job.previous:
                self.store.activate(job.model, job.previous)
                self.store.remove(job.model, job.version)
            else:
                self.store.remove(job.model)
        except (StoreError, RequestError) as exc:
            log.error("install %s: rollback of %s failed: %s", job.id, job.model, exc)
