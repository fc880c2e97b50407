"""The Wyoming voice server (the ``[wyoming]`` extra): Home Assistant's protocol for voices.
server.py (the TCP listener, who may connect, zeroconf), handler.py (one connection's events),
voices.py (what ``describe`` lists and which voice a request means), events.py (events read
within limits)."""
from ...errors import ConfigError

try:  # checked once here, for every module of the package
    import wyoming
    del wyoming
except ImportError as exc:  # pragma: no cover - the extra is missing
    raise ConfigError("the Wyoming server needs the [wyoming] extra: pip install 'edge-aigc[wyoming]'") from exc
