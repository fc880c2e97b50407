"""The exception tree of edge-aigc.

Library code raises these; only the CLI (exit codes) and the service (``error``
events) translate them. Each class carries the CLI exit code and, for request
errors, the MQTT error ``code`` of the protocol, so the mapping lives here once.

    EdgeAigcError
    ├── UsageError               a command line that cannot be run as given (exit 2, like argparse)
    ├── BundleError              a bundle cannot be trusted or read
    │   ├── CorruptBundle        not a tar, truncated, manifest unreadable
    │   ├── UnsafeBundle         absolute path, "..", link, device file, too large
    │   ├── IntegrityError       a file's sha256 differs, a file is missing or unlisted
    │   ├── UnsupportedSchema    written by a newer edge-aigc
    │   └── SignatureError       signature missing (when required) or not valid
    ├── ProfileError             a device profile file is invalid or unknown
    ├── StoreError               the device model store refused an operation
    ├── ConfigError              a device/service configuration is invalid
    │   └── BrokerError          an MQTT broker could not be started or reached
    ├── RequestError             a generation request cannot be served
    │   ├── BadRequest, UnknownModel, UnknownJob, Busy, TooLarge, Cancelled, Timeout, Unsupported,
    │   └── Rejected             an install's bundle failed a check (names the step)
    ├── BackendUnavailable       the runtime a bundle needs is not installed
    └── ConversionError          (host) a conversion failed
        ├── SourceError          the source does not import, read, or describe a generator
        └── FidelityError        the converted model lost more than the gate allows
"""
from __future__ import annotations

__all__ = [
    "EdgeAigcError",
    "UsageError",
    "BundleError",
    "CorruptBundle",
    "UnsafeBundle",
    "IntegrityError",
    "UnsupportedSchema",
    "SignatureError",
    "ProfileError",
    "StoreError",
    "ConfigError",
    "BrokerError",
    "RequestError",
    "BadRequest",
    "UnknownModel",
    "UnknownJob",
    "Busy",
    "TooLarge",
    "Cancelled",
    "Timeout",
    "Unsupported",
    "Rejected",
    "BackendUnavailable",
    "ConversionError",
    "SourceError",
    "FidelityError",
]


class EdgeAigcError(Exception):
    """Base of every error edge-aigc raises on purpose."""

    exit_code = 1


class UsageError(EdgeAigcError):
    """Arguments argparse cannot check alone (a value outside a list known at run time)."""

    exit_code = 2


class BundleError(EdgeAigcError):
    exit_code = 3


class CorruptBundle(BundleError):
    """The archive or its manifest cannot be read (truncated, not a tar, bad JSON)."""


class UnsafeBundle(BundleError):
    """The archive tries to write outside its directory, holds links/devices, or is too large."""


class IntegrityError(BundleError):
    """A file does not match the sha256 the manifest pins, or is missing or unlisted."""


class UnsupportedSchema(BundleError):
    """The manifest's schema is newer than this version of edge-aigc understands."""


class SignatureError(BundleError):
    """The manifest signature is missing where required, or does not verify."""


class ProfileError(EdgeAigcError):
    exit_code = 4


class StoreError(EdgeAigcError):
    exit_code = 5


class ConfigError(EdgeAigcError):
    exit_code = 6


class BrokerError(ConfigError):
    """The broker subprocess (Mosquitto) or the embedded one did not start, or a client cannot reach one."""


class RequestError(EdgeAigcError):
    """A request the runtime or service cannot serve; ``code`` is the protocol error code."""

    exit_code = 7
    code = "internal"


class BadRequest(RequestError):
    code = "bad_request"


class UnknownModel(RequestError):
    code = "unknown_model"


class UnknownJob(RequestError):
    """An install job id this device has no record of."""

    code = "unknown_job"


class Busy(RequestError):
    code = "busy"


class TooLarge(RequestError):
    code = "too_large"


class Cancelled(RequestError):
    code = "cancelled"


class Timeout(RequestError):
    code = "timeout"


class Unsupported(RequestError):
    """What was asked for needs an optional part this device does not have (the message names it)."""

    code = "unsupported"


class Rejected(RequestError):
    """An install whose bundle failed a check (sha256, signature, budget, smoke test): the
    client's bundle, not the device, is at fault. ``step`` names the check."""

    code = "rejected"

    def __init__(self, step: str, message: str):
        super().__init__(f"{step}: {message}")
        self.step = step


class BackendUnavailable(EdgeAigcError):
    """The inference runtime a bundle needs is not installed; the message names the extra."""

    exit_code = 8


class ConversionError(EdgeAigcError):
    """Host side: a conversion step failed."""

    exit_code = 9


class SourceError(ConversionError):
    """The source cannot be imported or read, or does not describe a generator."""


class FidelityError(ConversionError):
    """The converted artifact is below the fidelity thresholds; the message has the report."""
