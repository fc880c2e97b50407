"""Errors of the libraries edge-aigc calls are mapped to its own tree where it calls them
(ONNX Runtime session creation, the broker subprocess, paho's connect): one line, the right
exit code, never a foreign traceback."""
from __future__ import annotations

import pytest
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

from edge_aigc import Runtime
from edge_aigc.backends.onnxruntime import OnnxSession, foreign_errors
from edge_aigc.errors import BrokerError, BundleError, ConfigError
from edge_aigc.remote.local_brokers import Mosquitto, free_port
from edge_aigc.remote.client import DeviceClient

ORT_LOAD_ERRORS = ["Fail", "InvalidArgument", "NoSuchFile", "NoModel", "InvalidProtobuf", "ModelLoaded",
                   "NotImplemented", "InvalidGraph", "RuntimeException", "EPFail"]


@pytest.mark.parametrize("name", ORT_LOAD_ERRORS)
def test_every_onnxruntime_load_error_type_is_mapped(name):
    cls = getattr(ort_state, name, None)
    if cls is None:
        pytest.skip(f"this onnxruntime has no {name}")
    assert issubclass(cls, foreign_errors())


def test_a_model_file_onnxruntime_cannot_parse_is_a_bundle_error(tmp_path, make_bundle):
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"\x08\x07not a protobuf graph")
    with pytest.raises(BundleError, match=r"tiny: ONNX Runtime cannot load model\.onnx") as err:
        OnnxSession(bad, None, name="tiny")
    assert str(tmp_path) not in str(err.value)
    with pytest.raises(BundleError):
        Runtime([make_bundle()], profile="x86-avx2")  # its model.onnx is 16 KiB of filler


def test_a_broker_that_cannot_start_is_a_broker_error(tmp_path):
    with pytest.raises(BrokerError, match="mosquitto exited"):
        Mosquitto(tmp_path, extra_config="this_is_not_an_option 1").start()
    assert issubclass(BrokerError, ConfigError)


def test_an_unreachable_broker_is_a_broker_error():
    with pytest.raises(BrokerError, match="cannot reach MQTT broker"):
        DeviceClient(f"mqtt://127.0.0.1:{free_port()}").connect(timeout=2)
