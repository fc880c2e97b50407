"""The artifact: what the host writes and the device trusts.

manifest.py and task_config.py (what a bundle declares), archive.py (safe tar reading and
writing), signing.py (Ed25519), load.py (verify and open a bundle), store.py (the installed
versions; the runtime opens bundles through it).
"""
