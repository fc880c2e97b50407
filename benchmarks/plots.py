"""The PNG plots: decode latency by position, and speed per system as bars."""
from __future__ import annotations

from pathlib import Path

__all__ = ["plot_latency", "plot_bars"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display on a build machine
    import matplotlib.pyplot as plt

    return plt


def plot_latency(curves: dict[str, list[float]], first_position: int, title: str, path: Path) -> None:
    import numpy as np

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for label, lat in curves.items():
        ms = np.asarray(lat) * 1e3
        smooth = np.convolve(ms, np.ones(5) / 5, mode="valid") if len(ms) > 10 else ms
        ax.plot(np.arange(len(smooth)) + first_position + (len(ms) - len(smooth)) // 2, smooth, label=label)
    ax.set(title=title, xlabel="position of the generated token", ylabel="ms per token (5-step mean)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_bars(data: dict[str, dict], key: str, title: str, path: Path, higher_is_better: bool) -> None:
    plt = _pyplot()
    labels = list(data)
    values = [data[k][key] for k in labels]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    colors = ["#999999" if k.startswith("pytorch") else "#3b75af" for k in labels]
    ax.barh(labels, values, color=colors)
    ax.set(title=title, xlabel=key.replace("_", " ") + (" (higher is better)" if higher_is_better
                                                         else " (lower is better)"))
    ax.invert_yaxis()
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
