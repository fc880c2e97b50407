"""The device process: one worker (worker.py) and its front ends.

server.py wires them (DeviceService), app.py builds one from a config (config.py); mqtt/ is
the MQTT front end (protocol, transport, replies), http/ the OpenAI-compatible API,
homeassistant.py Home Assistant's MQTT discovery; ledger.py de-duplicates request ids and
keeps stats; systemd.py speaks sd_notify.
"""
