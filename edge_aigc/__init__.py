"""edge-aigc: generative models on edge devices, driven over MQTT.

The public surface is listed in ``__all__``; everything else is internal.
"""
from ._version import __version__
from .bundle.load import Bundle, load_bundle, pack_bundle
from .errors import (BackendUnavailable, BadRequest, BundleError, Busy, Cancelled, ConfigError,
                     CorruptBundle, EdgeAigcError, IntegrityError, ProfileError, RequestError,
                     SignatureError, StoreError, Timeout, TooLarge, UnknownModel, UnsafeBundle,
                     UnsupportedSchema)
from .bundle.manifest import Manifest
from .device.profiles import Profile, get_profile, list_profiles
from .runtime.runtime import Runtime
from .bundle.store import ModelStore
from .tasks.base import CancelToken, Output, Progress, Result, Token

__all__ = [
    "__version__", "load_bundle", "pack_bundle", "Bundle", "Manifest", "ModelStore", "Runtime",
    "CancelToken", "Token", "Progress", "Result", "Output",
    "Profile", "get_profile", "list_profiles",
    "EdgeAigcError", "BundleError", "CorruptBundle", "UnsafeBundle", "IntegrityError",
    "UnsupportedSchema", "SignatureError", "ProfileError", "StoreError", "ConfigError",
    "RequestError", "BadRequest", "UnknownModel", "Busy", "TooLarge", "Cancelled", "Timeout",
    "BackendUnavailable",
]
