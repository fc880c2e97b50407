"""The HTTP front end (the ``[http]`` extra): server.py (uvicorn, auth, one error shape),
api.py (the OpenAI routes), installs.py (OTA over HTTP), common.py (what routes share),
openai.py (OpenAI's shapes and our parameters, pure), prometheus.py (``/metrics``)."""
from ...errors import ConfigError

try:  # checked once here, for every module of the package
    import starlette
    import uvicorn
    del starlette, uvicorn
except ImportError as exc:  # pragma: no cover - the extra is missing
    raise ConfigError("the HTTP API needs the [http] extra: pip install 'edge-aigc[http]'") from exc
