"""Where host-side downloads and derived files are kept between runs."""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_root"]


def cache_root() -> Path:
    """``$EDGE_AIGC_CACHE``, else ~/.cache/edge-aigc (wheels, dequantized GGUF models, llama.cpp)."""
    return Path(os.environ.get("EDGE_AIGC_CACHE") or Path.home() / ".cache" / "edge-aigc")
