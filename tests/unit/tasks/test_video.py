"""video-generation: image generators' latent walks and class morphs, as GIF and MP4, through
Runtime, `edge-aigc run --task` and MQTT (real bundles, a real broker)."""
from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, ImageSequence

from edge_aigc import CancelToken, Runtime
from edge_aigc.errors import BadRequest, Unsupported
from edge_aigc.remote.client import DeviceClient
from edge_aigc.tasks.video import _positions, slerp
from tests.helpers.service import running_service, write_config


@pytest.fixture(scope="module")
def rt(bundles):
    with Runtime([bundles["image"], bundles["blend"], bundles["text"]], "x86-avx2") as runtime:
        yield runtime


def video(rt, model, **params):
    return rt.generate(model, task="video-generation", **params)


def frames_of(gif: bytes) -> tuple[list[np.ndarray], Image.Image]:
    img = Image.open(io.BytesIO(gif))
    return [np.asarray(f.convert("L")) for f in ImageSequence.Iterator(img)], img


def test_slerp_ends_on_its_keys_and_keeps_the_norm_between_them():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(64), rng.standard_normal(64)
    assert np.allclose(slerp(a, b, 0.0), a) and np.allclose(slerp(a, b, 1.0), b)
    mid = slerp(a, b, 0.5)
    assert abs(np.linalg.norm(mid) - np.linalg.norm(a)) < 0.15 * np.linalg.norm(a)
    assert np.linalg.norm((a + b) / 2) < 0.8 * np.linalg.norm(a), "a straight line would shrink it"


def test_a_looped_path_closes_on_its_first_key_and_an_open_one_ends_on_its_last():
    looped = _positions(8, 4, loop=True)
    assert looped[0] == (0, 1, 0.0) and looped[-1][:2] == (3, 0) and 0 < looped[-1][2] < 1
    open_path = _positions(7, 4, loop=False)
    assert open_path[0] == (0, 1, 0.0) and open_path[-1] == (2, 3, 1.0)


def test_a_walk_is_an_animated_gif_that_loops_at_the_fps_asked(rt):
    result = video(rt, "tiny-dcgan", frames=12, fps=10, seed=5, label="c", scale=2)
    [out] = result.outputs
    assert out.content_type == "image/gif" and out.name == "video.gif"
    frames, gif = frames_of(out.data)
    assert len(frames) == 12 and gif.size == (56, 56)
    assert gif.info["duration"] == 100 and gif.info["loop"] == 0
    assert result.meta["mode"] == "walk" and result.meta["labels"] == ["c"] and result.meta["seed"] == 5
    steps = [np.abs(frames[i + 1].astype(int) - frames[i]).mean() for i in range(11)]
    assert min(steps) > 0, "every frame moves"
    assert video(rt, "tiny-dcgan", frames=12, fps=10, seed=5, label="c", scale=2).outputs[0].data == out.data


def test_a_morph_starts_on_one_class_and_ends_on_the_other(rt):
    result = video(rt, "tiny-blend", labels=["a", "d"], frames=5, loop=False, seed=9, scale=1)
    frames, gif = frames_of(result.outputs[0].data)
    assert result.meta["mode"] == "morph" and result.meta["labels"] == ["a", "d"]
    assert "loop" not in gif.info, "loop=false plays once"
    # the same latent, rendered as a plain image of each end class
    rng = np.random.default_rng(9)
    z = rng.standard_normal((1, 16)).astype(np.float32)
    task = rt.model("tiny-blend").task
    for frame, label in ((frames[0], 0), (frames[-1], 3)):
        [[expected]] = list(task.render(z, np.array([label]), 1, CancelToken()))
        assert np.abs(frame.astype(int) - np.asarray(expected)).max() <= 1


def test_a_blending_model_morphs_through_every_class_when_none_is_asked(rt):
    result = video(rt, "tiny-blend", frames=8, seed=1)
    assert result.meta["labels"] == list("abcd") and result.meta["mode"] == "morph"


def test_mp4_is_h264_with_every_frame(rt):
    import imageio.v3 as iio  # the video extra, which the test extra pulls in
    result = video(rt, "tiny-blend", frames=10, fps=5, seed=2, scale=4, format="mp4")
    [out] = result.outputs
    assert out.content_type == "video/mp4" and out.data[4:8] == b"ftyp"
    frames = iio.imread(out.data, extension=".mp4", index=None)
    assert frames.shape[:3] == (10, 56, 56)
    assert iio.immeta(out.data, extension=".mp4")["codec"] == "h264"


def test_mp4_without_the_video_extra_is_unsupported_naming_it_and_gif_still_works(rt, monkeypatch):
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # as on a device without the extra
    with pytest.raises(Unsupported, match=r"edge-aigc\[video\].*imageio_ffmpeg is missing"):
        video(rt, "tiny-blend", frames=4, format="mp4")
    assert video(rt, "tiny-blend", frames=4).outputs[0].content_type == "image/gif"


@pytest.mark.parametrize("params,message", [
    ({"frames": 241}, "'frames'"),
    ({"frames": 1}, "'frames'"),
    ({"fps": 0}, "'fps'"),
    ({"format": "webm"}, "'format'"),
    ({"label": "zebra"}, "not a class"),
    ({"labels": ["a", "zebra"]}, "not a class"),
    ({"labels": ["a"]}, "at least 2"),
    ({"labels": ["a", "b"], "label": "a"}, "not both"),
    ({"count": 4}, "unknown parameter 'count'"),
])
def test_bad_video_parameters_are_refused_naming_them(rt, params, message):
    with pytest.raises(BadRequest, match=message):
        video(rt, "tiny-blend", **params)


def test_an_index_model_cannot_morph_and_a_text_model_serves_no_video(rt):
    with pytest.raises(BadRequest, match="cannot blend"):
        video(rt, "tiny-dcgan", labels=["a", "b"])
    with pytest.raises(BadRequest, match="serves text-generation, not 'video-generation'"):
        video(rt, "tiny-lm", frames=4)
    assert rt.info("tiny-dcgan")["tasks"] == ["image-generation", "video-generation"]


def test_run_cli_writes_a_gif(bundles, tmp_path):
    out = subprocess.run([sys.executable, "-m", "edge_aigc", "run", str(bundles["blend"]), "--task",
                          "video-generation", "--labels", "a", "--labels", "b", "--frames", "6", "--seed", "3"],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    frames, _ = frames_of((tmp_path / "tiny-blend.gif").read_bytes())
    assert len(frames) == 6 and "mode=morph" in out.stderr
    out = subprocess.run([sys.executable, "-m", "edge_aigc", "run", str(bundles["blend"]), "--task",  # comma-separated
                          "video-generation", "--labels", "a,b,c", "--frames", "6", "-o", "abc.gif"],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0 and "labels=['a', 'b', 'c']" in out.stderr, out.stderr
    out = subprocess.run([sys.executable, "-m", "edge_aigc", "run", str(bundles["blend"]), "--task",
                          "video-generation", "--frames", "999"], capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "'frames'" in out.stderr and "Traceback" not in out.stderr


def test_video_over_mqtt_goes_to_the_data_topic(broker, bundles, tmp_path):
    cfg = write_config(tmp_path / "device.toml", broker.port, [bundles["blend"]], device_id="vid")
    with running_service(cfg), DeviceClient(f"mqtt://127.0.0.1:{broker.port}") as c:
        r = c.request("vid", "generate", "tiny-blend", {"labels": ["b", "c"], "frames": 6},
                      task="video-generation")
        bad = c.request("vid", "generate", "tiny-blend", {"frames": 6}, task="hologram")
        over = c.request("vid", "generate", "tiny-blend", {"frames": 10_000}, task="video-generation")
        still = c.request("vid", "generate", "tiny-blend", {"label": "b"})
    [d] = r.final["data"]
    assert d["topic"] == f"edge-aigc/vid/data/{r.id}" and d["content_type"] == "image/gif"
    assert r.final["task"] == "video-generation" and r.final["meta"]["frames"] == 6
    assert len(frames_of(r.data[d["topic"]])[0]) == 6
    assert bad.final["code"] == "bad_request" and "'task'" in bad.final["message"]
    assert over.final["code"] == "bad_request" and "'frames'" in over.final["message"]
    assert still.final["task"] == "image-generation"
