"""From a service config to a running-ready service: store, runtime with its models, service."""
from __future__ import annotations

import logging

from ..bundle import signing
from ..runtime.runtime import Runtime
from ..tasks.text.sessions import SessionLimits
from ..bundle.store import ModelStore, default_state_dir
from .config import ServiceConfig
from .server import DeviceService

__all__ = ["build_service"]

log = logging.getLogger(__name__)


def build_service(cfg: ServiceConfig) -> tuple[Runtime, DeviceService]:
    """Load every configured model (installed names or bundle paths), then wire the service."""
    trusted = cfg.trusted_key()
    key = signing.load_public_key(trusted) if trusted else None
    if key is None:
        log.warning("allow_unsigned = true: bundles are checked against their sha256 only, "
                    "not a signature")
    state = cfg.state_dir or str(default_state_dir())
    store = ModelStore(state, public_key=key, require_signature=key is not None)
    removed = store.recover()  # what a killed install left, before any model loads
    if removed:
        log.warning("model store: removed what an interrupted install left: %s", ", ".join(removed))
    lim = cfg.limits
    runtime = Runtime(store, cfg.profile or None, state_dir=state, public_key=key,
                      require_signature=key is not None,
                      session_limits=SessionLimits(lim.max_sessions, lim.session_mb << 20, lim.session_ttl_s,
                                                   lim.max_prefixes))
    try:
        for model in cfg.models:
            runtime.load(model)
        return runtime, DeviceService(cfg, runtime)  # refuses a bad [http] (tokens, TLS, address)
    except BaseException:
        runtime.close()
        raise
