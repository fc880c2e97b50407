"""Loaded models and one way to run them (runtime.py); bundle_bench.py is the device half of
``edge-aigc bench --bundle``."""
from .runtime import LoadedModel, Runtime

__all__ = ["LoadedModel", "Runtime"]
