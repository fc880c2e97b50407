"""The public surface is on purpose: ``edge_aigc.__all__`` is exactly what the package exposes."""
from __future__ import annotations

import types

import edge_aigc


def test_all_lists_every_public_name_of_the_package_and_only_those():
    public = {n for n, v in vars(edge_aigc).items() if not n.startswith("_") and not isinstance(v, types.ModuleType)}
    assert public == set(edge_aigc.__all__) - {"__version__"}
    assert all(hasattr(edge_aigc, n) for n in edge_aigc.__all__)

