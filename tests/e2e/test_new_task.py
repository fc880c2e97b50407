"""Adding a task is writing its two specs: a toy task, defined only in this file, goes through
conversion (exported, gated against fp32, packaged), the runtime and the MQTT service, with no
other change to the kit (docs/design.md, "Adding a task")."""
from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterator

import numpy as np
import pytest
import torch

from converters import ConvertOptions, TorchGenerator, convert
from converters.gate.calibration import generator_feeds
from converters.gate.specs import GateSpec, register_gate, unregister_gate
from edge_aigc import Runtime
from edge_aigc.bundle.task_config import TaskConfigBase, bad, kinds
from edge_aigc.device.profiles import get_profile
from edge_aigc.remote.client import DeviceClient
from edge_aigc.tasks.base import CancelToken, Event, Output, Result
from edge_aigc.tasks.spec import Param, TaskSpec, register, unregister
from tests.helpers.service import running_service, write_config

TASK = "vector-generation"


@dataclass(frozen=True, kw_only=True)
class VectorConfig(TaskConfigBase):
    task: ClassVar[str] = TASK
    latent: int = field(metadata=kinds(int))
    length: int = field(metadata=kinds(int))

    def check(self) -> None:
        if self.latent < 1 or self.length < 1:
            raise bad("latent" if self.latent < 1 else "length", "must be at least 1")


class VectorTask:
    """A latent in, a vector out, as a .npy file."""

    task = TASK

    def __init__(self, name: str, root: Any, cfg: VectorConfig, session: Any):
        self.name, self.cfg, self.session = name, cfg, session

    def stream(self, params: dict[str, Any], cancel: CancelToken) -> Iterator[Event]:
        cancel.check()
        start = time.perf_counter()
        z = np.random.default_rng(params["seed"]).standard_normal((1, self.cfg.latent)).astype(np.float32)
        vec = next(iter(self.session.run({"z": z}).values())) * params["scale"]
        buf = io.BytesIO()
        np.save(buf, vec)
        yield Result(self.name, self.task, outputs=(Output("application/x-npy", buf.getvalue(), "vector.npy"),),
                     meta={"seed": params["seed"], "seconds": time.perf_counter() - start})


def _flat(result: Result) -> str | None:
    vec = np.load(io.BytesIO(result.outputs[0].data))
    return None if np.ptp(vec) > 0 else "produced a constant vector"


def _max_error(ref: list[np.ndarray], out: list[np.ndarray], cfg: dict[str, Any]) -> dict[str, float]:
    return {"max_abs_error": float(max(np.max(np.abs(r - o)) for r, o in zip(ref, out)))}


def vector_model() -> TorchGenerator:
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 8)).eval()
    return TorchGenerator(module, {"z": torch.randn(1, 4)}, TASK, {"latent": 4, "length": 8}, output_names=["vec"])


@pytest.fixture
def vector_task():
    register(TaskSpec(TASK, (Param("seed", int, 0, 0, 2**32 - 1, "latent seed"),
                             Param("scale", float, 1.0, 0.0, 10.0, "output scale")),
                      VectorTask, config=VectorConfig, smoke={"seed": 1}, degenerate=_flat))
    register_gate(GateSpec(TASK, {"fp32": {"max_abs_error": 1e-5}, "fp16": {"max_abs_error": 1e-2}},
                           generator_feeds, _max_error))
    yield
    unregister_gate(TASK)
    unregister(TASK)


def test_a_task_written_as_two_specs_converts_runs_and_serves_over_mqtt(vector_task, broker, tmp_path):
    [fp32] = convert("tests.e2e.test_new_task:vector_model", [get_profile("x86-avx2")], tmp_path / "vec.eaigc",
                     ConvertOptions(recipe="fp32", name="tiny-vector"))
    assert fp32.fidelity.passed and fp32.fidelity.metrics["max_abs_error"] <= 1e-5, fp32.fidelity.summary()
    with pytest.raises(Exception, match="unknown parameter 'steps'"):  # its parameters, checked
        Runtime([fp32.bundle], "x86-avx2").generate("tiny-vector", steps=3)
    with Runtime([fp32.bundle], "x86-avx2") as rt:
        direct = np.load(io.BytesIO(rt.generate("tiny-vector", seed=7, scale=2.0).outputs[0].data))
    assert direct.shape == (1, 8)

    cfg = write_config(tmp_path / "device.toml", broker.port, [fp32.bundle], device_id="vec-dev", allow_unsigned=True)
    with running_service(cfg), DeviceClient(f"mqtt://127.0.0.1:{broker.port}") as client:
        reply = client.request("vec-dev", "generate", "tiny-vector", {"seed": 7, "scale": 2.0}, timeout=30)
        assert reply.ok, reply.events[-1]
        [data] = reply.final["data"]
        assert data["content_type"] == "application/x-npy"
        np.testing.assert_array_equal(np.load(io.BytesIO(reply.data[data["topic"]])), direct)
        refused = client.request("vec-dev", "generate", "tiny-vector", {"scale": 11.0}, timeout=30)
        assert refused.final["code"] == "bad_request" and "scale" in refused.final["message"]
        models = client.request("vec-dev", "models", timeout=10).final["models"]
        assert [m["task"] for m in models] == [TASK]
