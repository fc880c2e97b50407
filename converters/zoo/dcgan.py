"""The zoo's digits: the classic Keras DCGAN generator, class-conditional, trained on real MNIST.

Generator (TensorFlow's DCGAN tutorial layout, plus a class input): 100-d noise and a label
embedding → Dense 7·7·256 → BatchNorm → LeakyReLU → Conv2DTranspose 128 → BatchNorm →
LeakyReLU → Conv2DTranspose 64 (x2) → BatchNorm → LeakyReLU → Conv2DTranspose 1 (x2), tanh:
28x28x1 in [-1, 1]. Written in Keras 3 and trained on its torch backend (no TensorFlow).

Training (the loop is torch's, on the Keras models' parameters, as Keras' own guide to
custom loops on torch does): hinge loss, a discriminator with spectral norm, a class
projection and an auxiliary classifier (AC-GAN: trained on real digits, it pulls each
sample towards the class asked for), ±2 px shifts of the real digits, a small mode-seeking
term that keeps samples of one class apart (the fakes come in pairs of latents per label),
one generator pass per step, and samples from an exponential moving average of the
generator's weights. Data: the 4,000 training digits of converters/zoo/mnist.py.

    OMP_NUM_THREADS=2 python -m converters.zoo.dcgan [--steps 3000] [--out converters/zoo/artifacts/digits-dcgan.keras]

The ``.keras`` file it writes is what the zoo converts (``edge-aigc convert FILE.keras``);
the report beside it holds the judge's bars (converters/zoo/judge.py).
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from keras import layers  # noqa: E402
from torch.nn.functional import cross_entropy  # noqa: E402

from .mnist import CLASSES, SIZE, digits  # noqa: E402

SEED = 1234
LATENT = 100
ARTIFACTS = Path(__file__).parent / "artifacts"
MODEL = ARTIFACTS / "digits-dcgan.keras"


def generator(latent: int = LATENT, classes: int = CLASSES) -> keras.Model:
    z = keras.Input((latent,), name="z")
    label = keras.Input((), dtype="int32", name="label")
    h = layers.Concatenate()([z, layers.Embedding(classes, 50, name="label_embedding")(label)])
    h = layers.Dense(7 * 7 * 256, use_bias=False)(h)
    h = layers.LeakyReLU(0.2)(layers.BatchNormalization()(h))
    h = layers.Reshape((7, 7, 256))(h)
    for width, stride in ((128, 1), (64, 2)):
        h = layers.Conv2DTranspose(width, 5, strides=stride, padding="same", use_bias=False)(h)
        h = layers.LeakyReLU(0.2)(layers.BatchNormalization()(h))
    image = layers.Conv2DTranspose(1, 5, strides=2, padding="same", activation="tanh", name="image")(h)
    return keras.Model([z, label], image, name="digits_dcgan")


def discriminator(classes: int = CLASSES) -> keras.Model:
    image = keras.Input((SIZE, SIZE, 1), name="image")
    label = keras.Input((), dtype="int32", name="label")
    h = image
    for width in (64, 128):
        h = layers.SpectralNormalization(layers.Conv2D(width, 5, strides=2, padding="same"))(h)
        h = layers.LeakyReLU(0.2)(h)
    h = layers.Flatten()(h)
    score = layers.SpectralNormalization(layers.Dense(1))(h)[:, 0]
    # projection (Miyato & Koyama): the class enters as an inner product with the features
    projection = keras.ops.sum(layers.Embedding(classes, h.shape[-1])(label) * h, axis=1)
    # and an auxiliary classifier (AC-GAN): trained on real digits, it teaches the generator
    # to draw the class it was asked for
    logits = layers.Dense(classes, name="class_logits")(h)
    return keras.Model([image, label], [score + projection, logits], name="digits_critic")


def _shift(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Move by up to ±2 px, filling with background (NHWC)."""
    dx, dy = torch.randint(-2, 3, (2,), generator=g).tolist()
    padded = torch.nn.functional.pad(x, (0, 0, 2, 2, 2, 2), value=-1.0)
    return padded[:, 2 + dy:2 + dy + SIZE, 2 + dx:2 + dx + SIZE]


def _ema_update(ema: keras.Model, model: keras.Model, decay: float) -> None:
    with torch.no_grad():
        for e, w in zip(ema.weights, model.weights):
            e.value.mul_(decay).add_(w.value, alpha=1 - decay)


def standing_statistics(model: keras.Model, samples: int = 2000) -> keras.Model:
    """Set each BatchNorm's moving mean and variance to the statistics of one large seeded
    batch through this generator (BigGAN's "standing statistics"). An EMA of the weights
    also averages the moving statistics of weights long gone, which dims and smears every
    sample: at 2,000 steps 22% were recognised without this, 98% with it."""
    norms = [layer for layer in model.layers if isinstance(layer, layers.BatchNormalization)]
    momentum = [layer.momentum for layer in norms]
    g = torch.Generator().manual_seed(SEED + 1)
    z = torch.randn(samples, LATENT, generator=g)
    labels = torch.arange(samples, dtype=torch.int32) % CLASSES
    try:
        for layer in norms:
            layer.momentum = 0.0  # the new statistics replace the old outright
        with torch.no_grad():
            model([z, labels], training=True)
    finally:
        for layer, m in zip(norms, momentum):
            layer.momentum = m
    return model


def _save(ema: keras.Model, path: Path) -> None:
    """The EMA generator with its own BatchNorm statistics, on a copy (training goes on)."""
    copy = generator()
    copy.set_weights(ema.get_weights())
    standing_statistics(copy).save(path)


def train(steps: int, out: Path, batch: int = 64, ms_weight: float = 0.1, ac_weight: float = 1.0,
          checkpoint_every: int = 0, log=print) -> dict:
    keras.utils.set_random_seed(SEED)
    g = torch.Generator().manual_seed(SEED)
    images, labels = digits("train")
    x_all = torch.tensor(images).permute(0, 2, 3, 1).contiguous()  # NHWC, as Keras
    y_all = torch.tensor(labels, dtype=torch.int32)
    gen, disc, ema = generator(), discriminator(), generator()
    ema.set_weights(gen.get_weights())
    opt_g = torch.optim.Adam(gen.parameters(), 2e-4, betas=(0.0, 0.9))
    opt_d = torch.optim.Adam(disc.parameters(), 2e-4, betas=(0.0, 0.9))
    start = time.time()
    half = batch // 2
    for step in range(steps):
        idx = torch.randint(0, len(x_all), (batch,), generator=g)
        real, y_real = _shift(x_all[idx], g), y_all[idx]
        # the fakes come in pairs, two latents per label, for the mode-seeking term below
        y = torch.cat([y_real[:half], y_real[:half]])
        z = torch.randn(batch, LATENT, generator=g)
        fake = gen([z, y], training=True)
        # one call for real and fake: spectral norm's power iteration updates its vector in place
        scores, logits = disc([torch.cat([real, fake.detach()]), torch.cat([y_real, y])], training=True)
        d_loss = (torch.relu(1 - scores[:batch]).mean() + torch.relu(1 + scores[batch:]).mean()
                  + ac_weight * cross_entropy(logits[:batch], y_real.long()))
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        # the same fakes train the generator (one generator pass per step, not two)
        # mode seeking (MSGAN): different latents for one label should give different images
        ratio = (fake[:half] - fake[half:]).abs().mean() / (z[:half] - z[half:]).abs().mean()
        scores, logits = disc([fake, y], training=True)
        g_loss = (-scores.mean() + ms_weight / (ratio + 1e-5)
                  + ac_weight * cross_entropy(logits, y.long()))
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        _ema_update(ema, gen, 0.999)
        if checkpoint_every and (step + 1) % checkpoint_every == 0 and step + 1 < steps:
            _save(ema, out.with_name(f"{out.stem}-{step + 1}{out.suffix}"))
        if step % 250 == 0 or step == steps - 1:
            log(f"step {step:>5}/{steps}  d {d_loss.item():.3f}  g {g_loss.item():.3f}  "
                f"{time.time() - start:5.0f} s")
    out.parent.mkdir(parents=True, exist_ok=True)
    _save(ema, out)
    return {"steps": steps, "seconds": round(time.time() - start), "seed": SEED, "batch": batch,
            "parameters": int(ema.count_params())}


def sampler(model: keras.Model):
    """``(z, labels) -> [N, 1, 28, 28]`` from a Keras generator, for the judge's bars."""
    def run(z: np.ndarray, y: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out = model([torch.tensor(z), torch.tensor(y, dtype=torch.int32)], training=False)
        return out.permute(0, 3, 1, 2).cpu().numpy()
    return run


class TorchDCGAN(torch.nn.Module):
    """The same generator in plain PyTorch, its weights copied from the Keras model: the
    benchmarks' "PyTorch eager" (Keras on torch calls these ops too, with its own overhead)."""

    def __init__(self, model: keras.Model):
        super().__init__()
        nn = torch.nn
        w = {layer.name: [v.value.detach().clone() for v in layer.weights] for layer in model.layers}
        names = [layer.name for layer in model.layers if layer.weights]
        emb, dense, bn0, ct1, bn1, ct2, bn2, out = names
        self.embed = nn.Embedding.from_pretrained(w[emb][0])
        self.dense = nn.Linear(*w[dense][0].shape, bias=False)
        self.dense.weight.data = w[dense][0].T.contiguous()
        self.bn0 = self._bn(nn.BatchNorm1d, w[bn0], model.get_layer(bn0).epsilon)
        self.bn1 = self._bn(nn.BatchNorm2d, w[bn1], model.get_layer(bn1).epsilon)
        self.bn2 = self._bn(nn.BatchNorm2d, w[bn2], model.get_layer(bn2).epsilon)
        self.ct1 = self._convt(w[ct1], stride=1)
        self.ct2 = self._convt(w[ct2], stride=2)
        self.out = self._convt(w[out], stride=2)

    @staticmethod
    def _bn(cls, weights, eps):
        gamma, beta, mean, var = weights
        bn = cls(len(gamma), eps=eps)
        bn.weight.data, bn.bias.data, bn.running_mean.data, bn.running_var.data = gamma, beta, mean, var
        return bn.eval()

    @staticmethod
    def _convt(weights, stride):
        kernel = weights[0]  # Keras: [kh, kw, out, in]; torch: [in, out, kh, kw]
        # Keras' "same": k - s rows of padding, the odd one at the end; torch's padding is
        # symmetric, so pad the start's share and crop the rest off the end in forward
        size = kernel.shape[0]
        conv = torch.nn.ConvTranspose2d(kernel.shape[3], kernel.shape[2], size, stride,
                                        padding=(size - stride) // 2, bias=len(weights) > 1)
        conv.crop = (size - stride) % 2
        conv.weight.data = kernel.permute(3, 2, 0, 1).contiguous()
        if len(weights) > 1:
            conv.bias.data = weights[1]
        return conv

    @staticmethod
    def _up(conv, h):
        h = conv(h)
        return h[:, :, :h.shape[2] - conv.crop, :h.shape[3] - conv.crop] if conv.crop else h

    def forward(self, z, label):
        lrelu = torch.nn.functional.leaky_relu
        h = lrelu(self.bn0(self.dense(torch.cat([z, self.embed(label)], 1))), 0.2)
        h = h.view(-1, 7, 7, 256).permute(0, 3, 1, 2)  # Keras' Reshape is channels-last
        h = lrelu(self.bn1(self._up(self.ct1, h)), 0.2)
        h = lrelu(self.bn2(self._up(self.ct2, h)), 0.2)
        return torch.tanh(self._up(self.out, h))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--out", type=Path, default=MODEL)
    parser.add_argument("--checkpoint-every", type=int, default=0, metavar="STEPS",
                        help="also save the EMA generator every STEPS steps (OUT-<step>.keras)")
    args = parser.parse_args()
    report = train(args.steps, args.out, checkpoint_every=args.checkpoint_every,
                   log=lambda line: print(line, flush=True))
    from .judge import bars

    report.update(bars(sampler(keras.saving.load_model(args.out, compile=False))))
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
