"""This machine: profiles.py (what each device runs), detect.py (which profile fits),
system.py (CPUs, RSS, temperature), tomltable.py (TOML tables whose unknown keys are errors),
records.py (small JSON records written atomically, versioned)."""
