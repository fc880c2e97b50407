"""The HTTP front end: api.py (Starlette routes, auth, SSE), openai.py (OpenAI's shapes and
our parameters, pure), prometheus.py (``/metrics``)."""
