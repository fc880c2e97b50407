"""The device's own model updates, transport-free: ota/ (the installer: receive, verify,
switch, versioned job records) and smoke.py (the smoke generation and fidelity spot check)."""
