"""From a service config to a running-ready service: store, runtime with its models, service."""
from __future__ import annotations

from .. import signing
from ..runtime import Runtime
from ..store import ModelStore, default_state_dir
from .config import ServiceConfig
from .server import DeviceService

__all__ = ["build_service"]


def build_service(cfg: ServiceConfig) -> tuple[Runtime, DeviceService]:
    """Load every configured model (installed names or bundle paths), then wire the service."""
    key = signing.load_public_key(cfg.pubkey) if cfg.pubkey else None
    state = cfg.state_dir or str(default_state_dir())
    store = ModelStore(state, public_key=key, require_signature=cfg.require_signature)
    runtime = Runtime(store, cfg.profile or None, state_dir=state, public_key=key,
                      require_signature=cfg.require_signature)
    try:
        for model in cfg.models:
            runtime.load(model)
    except BaseException:
        runtime.close()
        raise
    return runtime, DeviceService(cfg, runtime)
