"""The MQTT front end: protocol.py (topics, request parsing, event payloads; no MQTT in it),
transport.py (paho), frontend.py (requests to the worker, routing), replies.py (a job's
events as replies, the installer's voice)."""
