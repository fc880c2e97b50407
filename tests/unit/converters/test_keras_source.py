"""Keras sources: a .keras file, written here, converted to ONNX and TFLite under every recipe."""
from __future__ import annotations

import json
import os
import zipfile

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")
from keras import layers  # noqa: E402

from converters import ConvertOptions, convert  # noqa: E402
from converters.sources.load import load_source  # noqa: E402
from edge_aigc import Runtime, load_bundle  # noqa: E402
from edge_aigc.backends import open_session  # noqa: E402
from edge_aigc.errors import SourceError  # noqa: E402
from edge_aigc.device.profiles import load_profile  # noqa: E402
from tests.helpers import recipe_profile  # noqa: E402

RECIPES = ["fp32", "fp16", "int8-dynamic", "int8-static"]
LATENT, CLASSES = 12, 3


def tiny_keras_dcgan() -> keras.Model:
    """The classic Keras DCGAN layout (Dense → BN → LeakyReLU → Conv2DTranspose ...), tiny."""
    keras.utils.set_random_seed(0)
    z = keras.Input((LATENT,), name="z")
    label = keras.Input((), dtype="int32", name="label")
    h = layers.Concatenate()([z, layers.Embedding(CLASSES, 4)(label)])
    h = layers.Dense(7 * 7 * 16, use_bias=False)(h)
    h = layers.LeakyReLU(0.2)(layers.BatchNormalization()(h))
    h = layers.Reshape((7, 7, 16))(h)
    h = layers.Conv2DTranspose(8, 5, strides=2, padding="same", use_bias=False)(h)
    h = layers.LeakyReLU(0.2)(layers.BatchNormalization()(h))
    out = layers.Conv2DTranspose(1, 5, strides=2, padding="same", activation="tanh")(h)
    model = keras.Model([z, label], out)
    rng = np.random.default_rng(0)
    for _ in range(3):  # real BatchNorm statistics, as a trained model has
        model([rng.standard_normal((32, LATENT)).astype("float32"), rng.integers(0, CLASSES, 32).astype("int32")],
              training=True)
    return model


def keras_case(model) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded inputs and Keras' own output for them, as NCHW."""
    z = np.random.default_rng(7).standard_normal((3, LATENT)).astype("float32")
    label = np.array([0, 1, 2], "int32")
    out = keras.ops.convert_to_numpy(model([z, label], training=False))
    return z, label, out.transpose(0, 3, 1, 2)


@pytest.fixture(scope="module")
def keras_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("keras") / "tiny-dcgan.keras"
    tiny_keras_dcgan().save(path)
    return path


def test_the_task_is_inferred_from_the_generator_shape(keras_file):
    source = load_source(keras_file)
    assert (source.kind, source.task, source.name) == ("keras", "image-generation", "tiny-dcgan")
    assert source.task_config == {"latent_dim": LATENT, "image_size": [28, 28], "channels": 1,
                                  "output_range": [-1.0, 1.0], "num_classes": CLASSES,
                                  "class_labels": ["0", "1", "2"]}
    assert list(source.generator.example_inputs) == ["z", "label"]


def test_a_sidecar_overrides_what_is_inferred(tmp_path):
    path = tmp_path / "gen.keras"
    tiny_keras_dcgan().save(path)
    (tmp_path / "gen.keras.json").write_text(json.dumps(
        {"name": "letters", "task_config": {"class_labels": ["a", "b", "c"]}}))
    source = load_source(path)
    assert source.name == "letters" and source.task_config["class_labels"] == ["a", "b", "c"]


@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_keras_file_converts_under_every_recipe_graded_against_keras(keras_file, tmp_path, fmt):
    profiles = [load_profile(recipe_profile(tmp_path, r)) for r in RECIPES]
    results = convert(str(keras_file), profiles, tmp_path / "out", ConvertOptions(name="tiny-dcgan", format=fmt))
    z, label, expected = keras_case(keras.saving.load_model(keras_file))
    assert sorted(r.recipe for r in results) == sorted(RECIPES)
    for result in results:
        with load_bundle(result.bundle) as b:
            m = b.manifest
            assert m.fidelity["passed"] and (m.format, m.source["kind"]) == (fmt, "keras")
            assert m.source["keras_version"] == keras.__version__
            session = open_session(fmt, b.file(f"model.{fmt}"), None, "tiny-dcgan")
            got = session.run({"z": z, "label": label})["image"]
        assert got.shape == (3, 1, 28, 28), "NCHW, as the runtime reads images"
        psnr = 10 * np.log10(4.0 / np.mean((got.astype(np.float64) - expected) ** 2))
        assert psnr >= m.fidelity["thresholds"]["psnr_db"], (result.recipe, psnr)
    with Runtime([results[0].bundle], profile="x86-avx2") as rt:
        out = rt.generate("tiny-dcgan", label="2", count=2, seed=1)
    assert out.meta["labels"] == ["2", "2"]


def _save_with(tmp_path, name, layer, shape=(4,)):
    x = keras.Input(shape)
    path = tmp_path / f"{name}.keras"
    keras.Model(x, layer(x)).save(path)
    return path


def test_a_lambda_layer_is_refused_before_its_code_can_run(tmp_path):
    path = _save_with(tmp_path, "lam", layers.Lambda(lambda t: t * 2, name="double"))
    with pytest.raises(SourceError, match="layer 'double' is a Lambda layer"):
        load_source(path)


def test_a_layer_the_torch_backend_cannot_run_is_refused_with_keras_reason(tmp_path):
    z = keras.Input((LATENT,))
    h = layers.Reshape((4, 4, 3))(layers.Dense(48)(z))
    path = tmp_path / "lanczos.keras"
    keras.Model(z, layers.Resizing(8, 8, interpolation="lanczos3")(h)).save(path)
    with pytest.raises(SourceError, match="Resizing with Lanczos interpolation is not supported"):
        load_source(path)


def test_a_custom_class_is_refused_with_its_name(tmp_path):
    path = _save_with(tmp_path, "custom", layers.Dense(3, name="head"))
    with zipfile.ZipFile(path) as src:
        files = {n: src.read(n) for n in src.namelist()}
    config = json.loads(files["config.json"])
    config["config"]["layers"][1]["module"] = "my_package.layers"
    files["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(path, "w") as dst:
        for n, data in files.items():
            dst.writestr(n, data)
    with pytest.raises(SourceError, match=r"'head' is a custom class \(my_package.layers.Dense\)"):
        load_source(path)


@pytest.mark.parametrize("name,content,message", [
    ("notes.keras", b"hello", "not a Keras 3 .keras file"),
    ("old.h5", b"\x89HDF\r\n\x1a\n", "legacy HDF5 Keras file"),
    ("missing.keras", None, "no such Keras file"),
])
def test_a_file_that_is_not_keras_3_is_refused(tmp_path, name, content, message):
    if content is not None:
        (tmp_path / name).write_bytes(content)
    with pytest.raises(SourceError, match=message):
        load_source(tmp_path / name)


def test_a_model_of_no_known_shape_asks_for_a_sidecar(tmp_path):
    path = _save_with(tmp_path, "mlp", layers.Dense(3))
    with pytest.raises(SourceError, match="not an image generator by shape.*write mlp.keras.json"):
        load_source(path)
