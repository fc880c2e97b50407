"""The session protocol every backend implements, and a backend's view of a bundle."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ..device.system import ThreadPlan

__all__ = ["TensorInfo", "Session"]


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str                       # "float", "int64", … (ONNX element type names)
    shape: tuple[int | str | None, ...]


class Session(Protocol):
    """One loaded model. Created once per model and reused for every request."""

    backend: str                     # "onnxruntime" | "litert"
    providers: tuple[str, ...]       # what actually runs it, in order
    threads: ThreadPlan              # intra-op threads started, and why that many

    @property
    def inputs(self) -> list[TensorInfo]: ...

    @property
    def outputs(self) -> list[TensorInfo]: ...

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def native(self) -> Any:
        """The backend's own session object, for tasks that use backend features (IO binding)."""
