"""Fidelity metrics between a reference output and a converted model's output (numpy only)."""
from __future__ import annotations

import numpy as np

from edge_aigc.tasks.text.sampling import log_softmax

__all__ = ["psnr_db", "snr_db", "log_mel_distance", "aligned_log_mel_distance", "top1_agreement", "mean_kl", "mel_filterbank"]


def psnr_db(ref: np.ndarray, out: np.ndarray, peak: float) -> float:
    mse = float(np.mean((ref.astype(np.float64) - out) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(peak ** 2 / mse)


def snr_db(ref: np.ndarray, out: np.ndarray) -> float:
    noise = float(np.sum((ref.astype(np.float64) - out) ** 2))
    signal = float(np.sum(ref.astype(np.float64) ** 2))
    return float("inf") if noise == 0 else 10 * np.log10(max(signal, 1e-20) / noise)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """Triangular filters on the HTK mel scale, shape [n_mels, n_fft // 2 + 1]."""
    mel = lambda f: 2595 * np.log10(1 + f / 700)  # noqa: E731
    hz = lambda m: 700 * (10 ** (m / 2595) - 1)  # noqa: E731
    points = hz(np.linspace(mel(0), mel(sample_rate / 2), n_mels + 2))
    bins = np.fft.rfftfreq(n_fft, 1 / sample_rate)
    fb = np.zeros((n_mels, len(bins)))
    for i in range(n_mels):
        lo, mid, hi = points[i:i + 3]
        fb[i] = np.clip(np.minimum((bins - lo) / (mid - lo), (hi - bins) / (hi - mid)), 0, None)
    return fb


def _mel_power(audio: np.ndarray, sample_rate: int, n_fft: int = 1024, hop: int = 256,
               n_mels: int = 64) -> np.ndarray:
    audio = np.asarray(audio, np.float64).reshape(-1)
    if len(audio) < n_fft:
        audio = np.pad(audio, (0, n_fft - len(audio)))
    frames = np.lib.stride_tricks.sliding_window_view(audio, n_fft)[::hop] * np.hanning(n_fft)
    power = np.abs(np.fft.rfft(frames, axis=-1)) ** 2
    return power @ mel_filterbank(sample_rate, n_fft, n_mels).T


def log_mel_distance(ref: np.ndarray, out: np.ndarray, sample_rate: int, top_db: float = 80.0) -> float:
    """Mean absolute difference of log10 mel power (0 = identical spectra).

    Both are floored ``top_db`` below the reference's peak (as librosa's power_to_db does):
    otherwise silence, where the reference is exactly 0, turns inaudible rounding noise into
    the largest log differences of all.
    """
    r, o = _mel_power(ref, sample_rate), _mel_power(out, sample_rate)
    floor = max(float(r.max()), 1e-20) * 10 ** (-top_db / 10)
    return float(np.mean(np.abs(np.log10(np.maximum(r, floor)) - np.log10(np.maximum(o, floor)))))


def top1_agreement(ref_logits: np.ndarray, logits: np.ndarray) -> float:
    return float(np.mean(ref_logits.argmax(-1) == logits.argmax(-1)))


def mean_kl(ref_logits: np.ndarray, logits: np.ndarray) -> float:
    """Mean over positions of KL(reference || converted), in nats."""
    p_log, q_log = log_softmax(ref_logits), log_softmax(logits)
    return float(np.mean(np.sum(np.exp(p_log) * (p_log - q_log), axis=-1)))


def aligned_log_mel_distance(ref: np.ndarray, out: np.ndarray, sample_rate: int, top_db: float = 80.0) -> float:
    """``log_mel_distance`` along the best alignment of the two (dynamic time warping over mel
    frames), for outputs whose timing may differ, such as speech whose phoneme durations moved
    a frame: the mean frame distance on the warping path."""
    r, o = _mel_power(ref, sample_rate), _mel_power(out, sample_rate)
    floor = max(float(r.max()), 1e-20) * 10 ** (-top_db / 10)
    lr, lo = np.log10(np.maximum(r, floor)), np.log10(np.maximum(o, floor))
    cost = np.mean(np.abs(lr[:, None, :] - lo[None, :, :]), axis=-1)
    total = np.full_like(cost, np.inf)
    total[0] = np.cumsum(cost[0])
    for i in range(1, len(cost)):
        # from above or the diagonal, then along the row: D[j] = c[j] + min_k<=j (t[k] - c[k-1])
        t = np.minimum(total[i - 1], np.concatenate([[np.inf], total[i - 1, :-1]])) + cost[i]
        c = np.cumsum(cost[i])
        total[i] = c + np.minimum.accumulate(t - c)
    i, j, steps = len(cost) - 1, cost.shape[1] - 1, 1
    while i or j:  # walk the path back to count its steps
        options = [(total[i - 1, j - 1], i - 1, j - 1)] if i and j else []
        options += [(total[i - 1, j], i - 1, j)] if i else []
        options += [(total[i, j - 1], i, j - 1)] if j else []
        _, i, j = min(options)
        steps += 1
    return float(total[-1, -1] / steps)
