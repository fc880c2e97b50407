"""Generate with every bundle in a directory and write what came out, for comparing machines.

Runs unchanged on the x86-64 host and inside the emulated arm64 root (device install only:
no torch, no numpy beyond what edge_aigc needs):

    python generate.py BUNDLE_DIR OUT_DIR --profile rpi5

Each text bundle writes ``<model>.json`` (greedy token ids and text); each image bundle
``<model>.png``; each audio bundle ``<model>.wav``. The requests are fixed and seeded.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import edge_aigc

REQUESTS = {
    "text-generation": {"prompt": "You will", "max_new_tokens": 24, "temperature": 0.0,
                        "repetition_penalty": 1.0},
    "image-generation": {"count": 8, "seed": 3},
    "audio-generation": {"notes": "C4:0.5 E4:0.5 G4:0.5 R:0.25 C5:1.0"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("bundles", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--profile", required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for path in sorted(args.bundles.glob("*.eaigc")):
        start = time.perf_counter()
        with edge_aigc.Runtime([path], profile=args.profile) as rt:
            name = rt.loaded()[0]
            task = rt.model(name).bundle.manifest.task
            result = rt.generate(name, **REQUESTS[task])
        if task == "text-generation":
            (args.out / f"{path.stem}.json").write_text(json.dumps(
                {"token_ids": result.meta["token_ids"], "text": result.text}))
        else:
            suffix = ".png" if task == "image-generation" else ".wav"
            (args.out / f"{path.stem}{suffix}").write_bytes(result.outputs[0].data)
        print(f"{path.name}: {task} in {time.perf_counter() - start:.1f} s", flush=True)


if __name__ == "__main__":
    main()
