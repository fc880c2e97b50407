"""Device profiles, one TOML file per device; installed as package data ``edge_aigc.device_profiles``."""
