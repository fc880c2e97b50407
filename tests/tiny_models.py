"""Tiny real generators for converter tests (seconds to export). Factories for `edge-aigc convert`."""
from __future__ import annotations

import torch
from torch import nn

from converters import TorchGenerator

LATENT, CLASSES = 16, 4


class TinyDcgan(nn.Module):
    """Class-conditional DCGAN layout: Dense → BatchNorm → LeakyReLU → transposed convs → tanh."""

    def __init__(self, latent: int = LATENT, classes: int = CLASSES, width: int = 32):
        super().__init__()
        self.embed = nn.Embedding(classes, latent)
        self.fc = nn.Linear(latent, width * 4 * 4, bias=False)
        self.bn = nn.BatchNorm1d(width * 4 * 4)
        self.width = width
        self.up = nn.Sequential(
            nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(width // 2),
            nn.LeakyReLU(0.2),
            nn.ConvTranspose2d(width // 2, 1, 4, 2, 1), nn.Tanh())

    def forward(self, z, label):
        h = nn.functional.leaky_relu(self.bn(self.fc(z * self.embed(label))), 0.2)
        return self.up(h.view(-1, self.width, 4, 4))


def tiny_dcgan() -> TorchGenerator:
    torch.manual_seed(0)
    model = TinyDcgan()
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
                     "image_size": [16, 16], "channels": 1, "output_range": [-1.0, 1.0]})
