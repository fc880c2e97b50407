"""Tiny real generators for converter tests (seconds to export). Factories for `edge-aigc convert`."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from converters import TorchGenerator

LATENT, CLASSES = 16, 4


class Generator(nn.Module):
    """A class-conditional DCGAN generator in PyTorch: latent x class embedding → Linear →
    BatchNorm → LeakyReLU → 7x7 → two transposed convolutions → 28x28 in [-1, 1]."""

    def __init__(self, latent: int = LATENT, classes: int = CLASSES, width: int = 32):
        super().__init__()
        self.embed = nn.Embedding(classes, latent)
        self.fc = nn.Linear(latent, width * 7 * 7, bias=False)
        self.bn = nn.BatchNorm1d(width * 7 * 7)
        self.width = width
        self.up = nn.Sequential(
            nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(width // 2),
            nn.LeakyReLU(0.2),
            nn.ConvTranspose2d(width // 2, 1, 4, 2, 1), nn.Tanh())

    def forward(self, z, label):
        h = nn.functional.leaky_relu(self.bn(self.fc(z * self.embed(label))), 0.2)
        return self.up(h.view(-1, self.width, 7, 7))


def tiny_dcgan() -> TorchGenerator:
    torch.manual_seed(0)
    model = Generator()
    # Give BatchNorm real running statistics, as a trained model has.
    model.train()
    with torch.no_grad():
        for _ in range(4):
            model(torch.randn(64, LATENT), torch.randint(0, CLASSES, (64,)))
    model.eval()
    return TorchGenerator(
        module=model, task="image-generation",
        example_inputs={"z": torch.randn(1, LATENT), "label": torch.zeros(1, dtype=torch.int64)},
        output_names=["image"],
        task_config={"latent_dim": LATENT, "num_classes": CLASSES, "class_labels": list("abcd"),
                     "image_size": [28, 28], "channels": 1, "output_range": [-1.0, 1.0]})


class BlendDecoder(nn.Module):
    """A VAE-style decoder whose class input takes weights [batch, classes], as the zoo's VAE:
    latent ++ weights → Linear → 7x7 → transposed convolution → 14x14 in [0, 1]."""

    def __init__(self, latent: int = LATENT, classes: int = CLASSES, width: int = 8):
        super().__init__()
        self.fc, self.width = nn.Linear(latent + classes, width * 7 * 7), width
        self.up = nn.ConvTranspose2d(width, 1, 4, 2, 1)

    def forward(self, latent, label):
        h = torch.relu(self.fc(torch.cat([latent, label], 1))).view(-1, self.width, 7, 7)
        return torch.sigmoid(self.up(h))


def tiny_blend() -> TorchGenerator:
    torch.manual_seed(0)
    return TorchGenerator(
        module=BlendDecoder().eval(), task="image-generation",
        example_inputs={"latent": torch.randn(1, LATENT), "label": torch.eye(CLASSES)[:1]},
        task_config={"latent_dim": LATENT, "num_classes": CLASSES, "class_labels": list("abcd"),
                     "class_input": "label", "image_size": [14, 14], "channels": 1, "output_range": [0.0, 1.0]})


def dcgan_case() -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Three seeded latents and labels, and what the PyTorch DCGAN makes of them."""
    z = torch.randn(3, LATENT, generator=torch.Generator().manual_seed(7))
    label = torch.tensor([0, 1, 3])
    with torch.no_grad():
        return z, label, tiny_dcgan().module(z, label).numpy()


class TinySynth(nn.Module):
    """Source-filter audio: a sine at the requested pitch, shaped by a small conv net.

    Phase is accumulated as fractional cycles per frame and wrapped with x - floor(x),
    as the zoo model does (a float32 running sum over samples drifts).
    """

    def __init__(self, hop: int = 80, sample_rate: int = 8000):
        super().__init__()
        self.hop, self.sample_rate = hop, sample_rate
        self.conv = nn.Conv1d(2, 8, 3, padding=1)
        self.out = nn.Conv1d(8, 1, 1)

    def forward(self, f0, loudness):
        x = torch.stack([f0 / 500.0, loudness], 1)
        amp = torch.sigmoid(self.out(torch.tanh(self.conv(x))))[:, 0] * loudness
        cycles = f0 * self.hop / self.sample_rate                    # cycles per frame
        start = torch.cumsum(cycles, 1) - cycles
        start = start - torch.floor(start)                           # wrapped frame phase
        ramp = torch.arange(self.hop, dtype=f0.dtype) / self.hop     # within-frame position
        phase = start[..., None] + cycles[..., None] * ramp          # [B, T, hop]
        wave = torch.sin(2 * torch.pi * (phase - torch.floor(phase)))
        return (0.5 * amp[..., None] * wave).flatten(1)


def tiny_synth() -> TorchGenerator:
    torch.manual_seed(0)
    frames = 50
    return TorchGenerator(
        module=TinySynth().eval(), task="audio-generation",
        example_inputs={"f0": torch.full((1, frames), 440.0), "loudness": torch.ones(1, frames)},
        output_names=["audio"],
        dynamic_axes={"f0": {0: "batch", 1: "frames"}, "loudness": {0: "batch", 1: "frames"}},
        tflite_sizes={"batch": [1], "frames": [100, 400, 1050]},  # 1, 4 and 10.5 s at 100 frames/s
        task_config={"sample_rate": 8000, "hop_length": 80, "conditioning": "notes", "max_seconds": 10})


class MlpGenerator(nn.Module):
    """A weight-dominated image generator (two wide Linear layers): what int8 is for."""

    def __init__(self, latent: int = LATENT, hidden: int = 256):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(latent, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                                 nn.ReLU(), nn.Linear(hidden, 28 * 28), nn.Tanh())

    def forward(self, z):
        return self.net(z).reshape(-1, 1, 28, 28)


def tiny_mlp() -> TorchGenerator:
    torch.manual_seed(0)
    return TorchGenerator(
        module=MlpGenerator().eval(), task="image-generation",
        example_inputs={"z": torch.randn(1, LATENT)}, output_names=["image"],
        task_config={"latent_dim": LATENT, "image_size": [28, 28], "channels": 1,
                     "output_range": [-1.0, 1.0]})
