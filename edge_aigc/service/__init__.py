"""The MQTT device service: protocol, transport, request handling, systemd integration."""
