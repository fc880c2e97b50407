"""Image generation: seeded latents (+ class labels) → PNG bytes, one per image or a grid."""
from __future__ import annotations

import io
import math
import re
import secrets
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from PIL import Image

from ..backends.base import Session
from ..contract import Task
from ..errors import BadRequest, BundleError
from ..bundle.task_config import ImageConfig
from .base import CancelToken, Event, Output, Progress, Result, first_output
from .params import Param
from .spec import TaskSpec, register

__all__ = ["ImageTask", "to_png", "grid"]

CHUNK = 8  # images per model call: bounds memory and gives progress/cancel points


def to_pil(array: np.ndarray, lo: float, hi: float, scale: int) -> Image.Image:
    """[C, H, W] float in [lo, hi] → 8-bit grayscale or RGB image."""
    pixels = np.clip((array - lo) / (hi - lo), 0, 1) * 255
    pixels = np.rint(pixels).astype(np.uint8)
    img = Image.fromarray(pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0))
    return img.resize((img.width * scale, img.height * scale), Image.NEAREST) if scale > 1 else img


def to_png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def grid(images: list[Image.Image], pad: int = 2) -> Image.Image:
    cols = math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / cols)
    w, h = images[0].size
    sheet = Image.new(images[0].mode, (cols * (w + pad) + pad, rows * (h + pad) + pad))
    for i, img in enumerate(images):
        sheet.paste(img, (pad + (i % cols) * (w + pad), pad + (i // cols) * (h + pad)))
    return sheet


class ImageTask:
    task = Task.IMAGE

    def __init__(self, name: str, root: Path, cfg: ImageConfig, session: Session):
        self.name, self.session = name, session
        by_name = {i.name: i for i in session.inputs}
        if cfg.class_input and cfg.class_input not in by_name:
            raise BundleError(f"{name}: task_config.class_input {cfg.class_input!r} is not an input of the model")
        label = by_name.get(cfg.class_input) or next((i for i in session.inputs if i.dtype.startswith("int")), None)
        floats = [i for i in session.inputs if i.dtype.startswith("float") and (label is None or i.name != label.name)]
        if len(floats) != 1 or len(session.inputs) - len(floats) > 1:
            raise BundleError(f"{name}: an image generator takes one float latent input and at "
                              "most one class input (an integer index, or float weights named by class_input)")
        self.latent, self.label_input = floats[0], label
        self.latent_dim = int(cfg.latent_dim or self.latent.shape[-1])
        self.labels = [str(x) for x in cfg.class_labels]
        self.num_classes = cfg.num_classes or len(self.labels)
        self.range = list(cfg.output_range)

    @property
    def blends(self) -> bool:
        """Whether the class input takes weights, so that two classes can be mixed."""
        return self.label_input is not None and self.label_input.dtype.startswith("float")

    def class_index(self, label: str) -> int:
        if self.label_input is None:
            raise BadRequest(f"parameter 'label': {self.name} is not class-conditional")
        if label in self.labels:
            return self.labels.index(label)
        if re.fullmatch(r"[0-9]{1,9}", label) and int(label) < self.num_classes:  # ASCII digits only
            return int(label)
        raise BadRequest(f"parameter 'label': {label!r} is not a class of {self.name} "
                         f"(classes: {', '.join(self.labels) or range(self.num_classes)})")

    def _label_index(self, label: str | None, count: int) -> np.ndarray:
        if label is not None:
            return np.full(count, self.class_index(label), np.int64)
        if self.label_input is None:
            return np.zeros(count, np.int64)
        return np.arange(count, dtype=np.int64) % max(self.num_classes, 1)  # the classes in turn

    def one_hot(self, labels: np.ndarray) -> np.ndarray:
        return np.eye(max(self.num_classes, 1), dtype=np.float32)[labels]

    def render(self, z: np.ndarray, classes: np.ndarray | None, scale: int,
               cancel: CancelToken) -> Iterator[list[Image.Image]]:
        """Images for latents ``z`` [N, latent_dim] and ``classes`` (indices [N], or weights
        [N, num_classes] for a model that blends), CHUNK at a time."""
        for lo in range(0, len(z), CHUNK):
            cancel.check()
            feeds = {self.latent.name: z[lo:lo + CHUNK]}
            if self.label_input is not None and classes is not None:
                part = classes[lo:lo + CHUNK]
                if self.blends:
                    part = (part if part.ndim == 2 else self.one_hot(part)).astype(np.float32)
                else:
                    part = part.astype(np.int32 if self.label_input.dtype == "int32" else np.int64)
                feeds[self.label_input.name] = part
            batch = next(iter(self.session.run(feeds).values()))
            yield [to_pil(x, *self.range, scale) for x in batch]

    def stream(self, params: dict[str, Any], cancel: CancelToken) -> Iterator[Event]:
        count, start = params["count"], time.perf_counter()
        seed = params["seed"] if params["seed"] is not None else secrets.randbits(32)
        rng = np.random.default_rng(seed)
        z = rng.standard_normal((count, self.latent_dim)).astype(np.float32)
        labels = self._label_index(params["label"], count)
        images: list[Image.Image] = []
        for batch in self.render(z, labels, params["scale"], cancel):
            images += batch
            yield Progress(len(images), count, "images")
        if params["grid"] or count == 1:
            outputs = (Output("image/png", to_png(grid(images) if count > 1 else images[0]), "image.png"),)
        else:
            outputs = tuple(Output("image/png", to_png(img), f"image-{i}.png") for i, img in enumerate(images))
        meta = {"seed": seed, "count": count, "labels": self.names(labels), "width": images[0].width,
                "height": images[0].height, "seconds": round(time.perf_counter() - start, 4)}
        yield Result(self.name, self.task, outputs=outputs, meta=meta)

    def names(self, labels: np.ndarray) -> list[str]:
        return [self.labels[i] if i < len(self.labels) else str(i) for i in labels.tolist()]


IMAGE_PARAMS = (
    Param("label", str, None, help="class label name or index (conditional models)", max_len=64),
    Param("seed", int, None, 0, 2**32 - 1, "latent seed"),
    Param("count", int, 1, 1, 64, "images to generate"),
    Param("grid", bool, True, help="one PNG grid of all images (else one PNG each)"),
    Param("scale", int, 1, 1, 16, "upscale factor (nearest neighbour) for small images"),
)


def _blank(result: Result) -> str | None:
    data = first_output(result)
    if data is None:
        return "produced no output"
    pixels = np.asarray(Image.open(io.BytesIO(data)))
    return None if pixels.min() != pixels.max() else "produced a blank image (every pixel the same)"


def _image_figures(result: Result, seconds: float) -> dict[str, float]:
    count = result.meta["count"]
    return {"images_per_s": count / seconds, "ms_per_image": seconds * 1e3 / count}


SPEC = register(TaskSpec(
    Task.IMAGE, IMAGE_PARAMS, ImageTask, config=ImageConfig, smoke={"count": 1, "seed": 0}, degenerate=_blank,
    workload={"count": 64, "seed": 1, "grid": False},  # 16 small images ran in ~6 ms: too noisy to rank
    figures=_image_figures))
