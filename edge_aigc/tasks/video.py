"""Video generation from an image generator: a latent walk or a class morph, as GIF or MP4.

A *walk* passes through ``keyframes`` seeded latents, spherically interpolated (slerp keeps
each frame's latent at the norm the generator was trained on, where a straight line would
pass through the low-norm middle and fade), in one class. A *morph* keeps one latent and
blends the class weights from each of ``labels`` to the next; it needs a model whose class
input takes weights (``task_config.class_input``), since an index cannot be half of two.
With ``loop`` the path closes on itself, so the GIF repeats without a jump.

GIFs are written by Pillow; MP4 (H.264, yuv420p: plays in browsers) by imageio with the
ffmpeg binary of imageio-ffmpeg, the ``video`` extra.
"""
from __future__ import annotations

import io
import secrets
import time
from typing import Any, Iterator

import numpy as np
from PIL import Image

from ..contract import Task
from ..errors import BadRequest, Unsupported
from .base import CancelToken, Event, Output, Progress, Result
from .image import ImageTask
from .params import Param
from .spec import TaskSpec, register

__all__ = ["VideoTask", "slerp", "to_gif", "to_mp4"]


def slerp(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """Spherical interpolation from ``a`` (t = 0) to ``b`` (t = 1); linear when they are parallel."""
    cos = float(np.dot(a, b) / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))
    omega = np.arccos(np.clip(cos, -1.0, 1.0))
    if omega < 1e-4:
        return (1 - t) * a + t * b
    return (np.sin((1 - t) * omega) * a + np.sin(t * omega) * b) / np.sin(omega)


def _positions(frames: int, keys: int, loop: bool) -> list[tuple[int, int, float]]:
    """For each frame: the keyframe before it, the one after, and how far along (0..1)."""
    spans = keys if loop else keys - 1
    out = []
    for i in range(frames):
        u = i * spans / (frames if loop else frames - 1)
        k = min(int(u), spans - 1)
        out.append((k, (k + 1) % keys, u - k))
    return out


def to_gif(images: list[Image.Image], fps: int, loop: bool) -> bytes:
    buf = io.BytesIO()
    extra = {"loop": 0} if loop else {}  # NETSCAPE loop 0 = forever; without it, once
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:],
                   duration=round(1000 / fps), optimize=False, **extra)
    return buf.getvalue()


def to_mp4(images: list[Image.Image], fps: int) -> bytes:
    try:
        import imageio.v3 as iio
        import imageio_ffmpeg  # noqa: F401  (the ffmpeg binary imageio writes MP4 with)
    except ImportError as exc:
        raise Unsupported("format 'mp4' needs the video extra on the device: "
                                 f"pip install 'edge-aigc[video]' ({exc.name} is missing); 'gif' needs nothing") from None
    frames = np.stack([np.asarray(img) for img in images])
    # macro_block_size 2: yuv420p needs even sides, and no larger padding is wanted
    return iio.imwrite("<bytes>", frames, extension=".mp4", fps=fps, codec="libx264", macro_block_size=2)


class VideoTask:
    task = Task.VIDEO

    def __init__(self, images: ImageTask):
        self.images, self.name = images, images.name

    def _classes(self, params: dict[str, Any], rng: np.random.Generator) -> tuple[list[int], bool]:
        """The classes of the path, and whether it morphs between them."""
        img = self.images
        if params["labels"] is not None and params["label"] is not None:
            raise BadRequest("give 'label' (a walk in one class) or 'labels' (a morph), not both")
        if params["labels"] is not None:
            if not img.blends:
                raise BadRequest(f"parameter 'labels': {self.name} takes its class as an index and cannot "
                                 "blend two; give one 'label' for a latent walk in that class")
            if len(params["labels"]) < 2:
                raise BadRequest("parameter 'labels': a morph needs at least 2 classes")
            return [img.class_index(x) for x in params["labels"]], True
        if params["label"] is not None:
            return [img.class_index(params["label"])], False
        if img.blends:  # nothing asked for: morph through every class
            return list(range(img.num_classes)), True
        return [int(rng.integers(img.num_classes)) if img.label_input is not None else 0], False

    def stream(self, params: dict[str, Any], cancel: CancelToken) -> Iterator[Event]:
        start, img = time.perf_counter(), self.images
        seed = params["seed"] if params["seed"] is not None else secrets.randbits(32)
        rng = np.random.default_rng(seed)
        classes, morph = self._classes(params, rng)
        frames, loop = params["frames"], params["loop"]
        keys = len(classes) if morph else params["keyframes"]
        latents = rng.standard_normal((1 if morph else keys, img.latent_dim)).astype(np.float32)
        z = np.empty((frames, img.latent_dim), np.float32)
        weights = np.zeros((frames, max(img.num_classes, 1)), np.float32)
        eye = np.eye(weights.shape[1], dtype=np.float32)
        for i, (a, b, t) in enumerate(_positions(frames, keys, loop)):
            if morph:
                z[i], weights[i] = latents[0], (1 - t) * eye[classes[a]] + t * eye[classes[b]]
            else:
                z[i], weights[i] = slerp(latents[a], latents[b], t), eye[classes[0]]
        cond = weights if img.blends else np.full(frames, classes[0], np.int64)
        images: list[Image.Image] = []
        for batch in img.render(z, cond, params["scale"], cancel):
            images += batch
            yield Progress(len(images), frames, "frames")
        cancel.check()
        fmt = params["format"]
        data = to_gif(images, params["fps"], loop) if fmt == "gif" else to_mp4(images, params["fps"])
        output = Output("image/gif" if fmt == "gif" else "video/mp4", data, f"video.{fmt}")
        meta = {"seed": seed, "frames": frames, "fps": params["fps"], "format": fmt,
                "mode": "morph" if morph else "walk",
                "labels": img.names(np.array(classes)) if img.label_input is not None else [],
                "width": images[0].width, "height": images[0].height, "loop": loop,
                "seconds": round(time.perf_counter() - start, 4)}
        yield Result(self.name, self.task, outputs=(output,), meta=meta)


MAX_FRAMES = 240
VIDEO_PARAMS = (
    Param("label", str, None, help="class of a latent walk (conditional models)", max_len=64),
    Param("labels", list, None, max_len=16, commas=True,
          help="classes to morph through, in order, e.g. 0,1,2 (models whose class input takes weights)"),
    Param("seed", int, None, 0, 2**32 - 1, "latent seed"),
    Param("frames", int, 48, 2, MAX_FRAMES, "frames to render"),
    Param("fps", int, 12, 1, 50, "frames per second"),
    Param("keyframes", int, 4, 2, 16, "latents a walk passes through"),
    Param("loop", bool, True, help="end where it starts and play forever (GIF)"),
    Param("scale", int, 3, 1, 16, "upscale factor (nearest neighbour)"),
    Param("format", str, "gif", choices=("gif", "mp4"), help="gif (Pillow) or mp4 (H.264; the video extra)"),
)

# Image generators' models serve it: the runner is built on an image model's ImageTask.
SPEC = register(TaskSpec(Task.VIDEO, VIDEO_PARAMS, VideoTask, served_by=Task.IMAGE))
