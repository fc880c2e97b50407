"""Compare what two machines generated (generate.py's output directories) against the gates.

    python compare.py REFERENCE_DIR CANDIDATE_DIR

Text: identical greedy token ids. Images: PSNR over pixels in [-1, 1] at least the
int8-dynamic image gate (25 dB). Audio: SNR at least 12 dB and log-mel distance at most
0.25 (the int8-dynamic audio gate). Prints one line per output; exits 1 if any differ.
"""
from __future__ import annotations

import io
import json
import sys
import wave
from pathlib import Path

import numpy as np
from PIL import Image

from converters.gate.metrics import log_mel_distance, psnr_db, snr_db

IMAGE_PSNR_DB, AUDIO_SNR_DB, AUDIO_LOG_MEL = 25.0, 12.0, 0.25


def _pcm(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(io.BytesIO(path.read_bytes())) as w:
        return np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float64) / 32767, w.getframerate()


def compare(ref: Path, got: Path) -> tuple[bool, str]:
    if not got.is_file():
        return False, "missing"
    if ref.suffix == ".json":
        a, b = json.loads(ref.read_text()), json.loads(got.read_text())
        same = a["token_ids"] == b["token_ids"]
        return same, f"{len(a['token_ids'])} greedy tokens {'identical' if same else 'DIFFER'}: {b['text']!r}"
    if ref.suffix == ".png":
        a = np.asarray(Image.open(ref), np.float64) / 127.5 - 1
        b = np.asarray(Image.open(got), np.float64) / 127.5 - 1
        value = psnr_db(a, b, peak=2.0) if a.shape == b.shape else float("-inf")
        return value >= IMAGE_PSNR_DB, f"PSNR {value:.1f} dB (gate {IMAGE_PSNR_DB:g})"
    (a, rate), (b, _) = _pcm(ref), _pcm(got)
    if a.shape != b.shape:
        return False, f"lengths differ: {a.size} vs {b.size} samples"
    snr, mel = snr_db(a, b), log_mel_distance(a, b, rate)
    return snr >= AUDIO_SNR_DB and mel <= AUDIO_LOG_MEL, \
        f"SNR {snr:.1f} dB (gate {AUDIO_SNR_DB:g}), log-mel {mel:.4f} (gate {AUDIO_LOG_MEL:g})"


def main() -> int:
    ref_dir, got_dir = Path(sys.argv[1]), Path(sys.argv[2])
    refs = sorted(p for p in ref_dir.iterdir() if p.suffix in (".json", ".png", ".wav"))
    if not refs:
        print(f"compare: nothing generated in {ref_dir}", file=sys.stderr)
        return 1
    ok = True
    for ref in refs:
        same, detail = compare(ref, got_dir / ref.name)
        ok &= same
        print(f"{'ok  ' if same else 'FAIL'} {ref.name}: {detail}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
