"""Levers on the world VAE g (issue 11): retrain g's recipe (perceptual term at the world classifier's `middle` and
`last` taps, OneCycle Adam, batch 64) with one change, and score its reconstructions with the pipeline's oracle on
the first 1,000 test scenes. The changes:

- `--gan W`: a PatchGAN critic and the term W · λ · L_GAN, λ the adaptive weight of Eq. 17 (the paper's Sec. F),
  from `--start` (a fraction of the steps) on; hinge losses; `--nobn` for a critic without BatchNorm;
- `--up nearest|bilinear`: the decoder upsamples and then convolves (3x3) instead of transposed convolutions;
- `--perceptual segmenter|both`: the perceptual maps of the world segmenter's label-map logits (32x32) instead of,
  or beside, the classifier's (does a network other than the one g's loss reads see the shape?);
- `--ensemble K`: the perceptual maps of K world classifiers (the pipeline's and K-1 more of its recipe, seeds
  101, 102, ..., by `ginn.experts.embedded.reseeded_classifier`), so that g cannot match one network's features
  without the shape;
- `--taps early,middle,last`: the classifiers' taps whose maps g's loss reads (default `middle,last`);
- `--jitter J`: every step, image and reconstruction are shifted by one random offset of up to J pixels before the
  perceptual network reads them (the real maps are then computed each step), so that a texture which matches one
  alignment of the frozen network's features does not pay;
- `--width`, `--latent`, `--epochs`, `--lr`, `--clip` (0: no clipping).

Needs `dvc repro train_experts` first (the world data, the world classifier, the oracle). Prints a progress line
every 200 steps and one `RESULT <name> {...}` line: the oracle's accuracy per attribute and the PSNR (dB).

    python bench/world_vae_levers.py NAME [options]
"""
import argparse
import json
import pathlib
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ginn.experts.embedded import (LEAKY, ConvVAE, _unfrozen, _feature_targets, load_expert, perceptual_features,
                                   reconstruction_accuracy, reseeded_classifier, to_input, vae_psnr, vae_terms)
from ginn.world import load_world

ROOT = pathlib.Path(__file__).resolve().parents[1]


def arguments():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("name")
    p.add_argument("--epochs", type=int, default=11)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--latent", type=int, default=64)
    p.add_argument("--up", default="", help="nearest or bilinear: upsample + conv decoder")
    p.add_argument("--gan", type=float, default=0.0, help="weight of the PatchGAN term (0: none)")
    p.add_argument("--start", type=float, default=0.3, help="fraction of the steps before the GAN term is on")
    p.add_argument("--nobn", action="store_true", help="a critic without BatchNorm")
    p.add_argument("--dlr", type=float, default=2e-4)
    p.add_argument("--dwidth", type=int, default=32)
    p.add_argument("--lam_every", type=int, default=4, help="recompute λ (Eq. 17) every this many steps")
    p.add_argument("--lam_max", type=float, default=1e4)
    p.add_argument("--perceptual", default="classifier", choices=["classifier", "segmenter", "both"])
    p.add_argument("--ensemble", type=int, default=1, help="world classifiers whose maps g's loss reads")
    p.add_argument("--n", type=int, default=20000, help="training scenes")
    p.add_argument("--n_test", type=int, default=1000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--taps", default="middle,last", help="the classifiers' taps whose maps g's loss reads")
    p.add_argument("--jitter", type=int, default=0,
                   help="shift image and reconstruction by the same random offset of up to this many pixels "
                        "(reflect-padded) before the perceptual network reads them, every step")
    return p.parse_args()


def make_vae(a) -> ConvVAE:
    torch.manual_seed(0)
    vae = ConvVAE(name="world_vae", latent_dim=a.latent, width=a.width)
    if a.up:
        for i, m in enumerate(vae.decoder):
            if isinstance(m, nn.ConvTranspose2d):
                vae.decoder[i] = nn.Sequential(nn.Upsample(scale_factor=2, mode=a.up),
                                               nn.Conv2d(m.in_channels, m.out_channels, 3, 1, 1))
    return vae


def make_critic(width: int, batchnorm: bool) -> nn.Module:
    "A PatchGAN critic for 32x32 images: one logit per patch of an 8x8 grid."
    norm = nn.BatchNorm2d if batchnorm else (lambda c: nn.Identity())
    w = width
    return nn.Sequential(nn.Conv2d(3, w, 4, 2, 1), nn.LeakyReLU(LEAKY),
                         nn.Conv2d(w, 2 * w, 4, 2, 1), norm(2 * w), nn.LeakyReLU(LEAKY),
                         nn.Conv2d(2 * w, 4 * w, 3, 1, 1), norm(4 * w), nn.LeakyReLU(LEAKY),
                         nn.Conv2d(4 * w, 1, 3, 1, 1))


def reconstruction_terms(vae, x, features, real):
    "`(y, L_rec, KL, MSE)` of g's loss (the library's `vae_terms`): the GAN's λ of Eq. 17 needs L_rec alone."
    return vae_terms(x, *vae._posterior(x), vae._decode, features, 1.0, real)


class Jittered:
    "`features` read through one random shift of up to `j` pixels (reflect padding), the same for every call until `draw`."

    def __init__(self, features, j: int, seed: int = 0):
        self.features, self.j, self.g = features, j, torch.Generator().manual_seed(seed)
        self.dx = self.dy = 0

    def draw(self):
        self.dx, self.dy = (int(v) for v in torch.randint(-self.j, self.j + 1, (2,), generator=self.g))

    def __call__(self, x):
        j, s = self.j, x.shape[-1]
        padded = F.pad(x, (j, j, j, j), mode="reflect")
        return self.features(padded[..., j + self.dy:j + self.dy + s, j + self.dx:j + self.dx + s])


def adaptive_weight(rec, gan, last, cap: float) -> float:
    "Eq. 17: ‖∇_{Λ_L} L_rec‖ / (‖∇_{Λ_L} L_GAN‖ + δ) at the decoder's last layer, capped."
    g_rec = torch.autograd.grad(rec, last, retain_graph=True)[0].norm()
    g_gan = torch.autograd.grad(gan, last, retain_graph=True)[0].norm()
    return float((g_rec / (g_gan + 1e-4)).clamp(0, cap))


def train(a, vae, data, features, real):
    critic = make_critic(a.dwidth, not a.nobn)
    last = [m for m in vae.decoder.modules() if isinstance(m, (nn.ConvTranspose2d, nn.Conv2d))][-1].weight
    opt = torch.optim.Adam(vae.parameters(), lr=a.lr)
    critic_opt = torch.optim.Adam(critic.parameters(), lr=a.dlr, betas=(0.5, 0.9))
    batch, n = 64, len(data)
    per_epoch = n // batch
    steps = a.epochs * per_epoch
    gan_start = int(a.start * steps)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=a.lr, total_steps=steps, pct_start=0.15)
    rng, t0, lam = np.random.default_rng(0), time.time(), 0.0
    for epoch in range(a.epochs):
        perm = rng.permutation(n)
        for k in range(per_epoch):
            step, idx = epoch * per_epoch + k, perm[k * batch:(k + 1) * batch]
            x = to_input(data[idx])
            if isinstance(features, Jittered):
                features.draw()
            y, rec, kl, mse = reconstruction_terms(vae, x, features, None if real is None else [r[idx] for r in real])
            loss, gan_on = rec + kl, a.gan > 0 and step >= gan_start
            if gan_on:
                critic.eval()                       # the generator's pass: BatchNorm's running statistics
                g_loss = -critic(y).mean()
                critic.train()
                if (step - gan_start) % a.lam_every == 0:
                    lam = adaptive_weight(rec, g_loss, last, a.lam_max)
                loss = loss + a.gan * lam * g_loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if a.clip:
                torch.nn.utils.clip_grad_norm_(vae.parameters(), a.clip)
            opt.step()
            sched.step()
            if a.gan > 0 and step >= gan_start - 200:   # the critic starts 200 steps before the generator sees it
                d_loss = F.relu(1 - critic(x)).mean() + F.relu(1 + critic(y.detach())).mean()
                critic_opt.zero_grad(set_to_none=True)
                d_loss.backward()
                critic_opt.step()
            if step % 200 == 0:
                line = dict(step=step, mse=float(mse.detach()), kl=float(kl.detach()), lam=lam,
                            t=round(time.time() - t0))
                if gan_on:
                    line.update(d=float(d_loss.detach()), g=float(g_loss.detach()))
                print(json.dumps(line), flush=True)
    return time.time() - t0


def perceptual_maps(which: str, classifiers, segmenter, taps=("middle", "last")):
    "images → the list of frozen feature maps whose errors g's loss measures."
    from_classifiers = perceptual_features(classifiers, taps)

    def features(x):
        maps = from_classifiers(x) if which != "segmenter" else []
        return maps + ([segmenter._logits(x)] if which != "classifier" else [])
    return features


def main():
    a = arguments()
    torch.set_num_threads(a.threads)
    world = load_world(ROOT / "data/world/train.npz")
    test = load_world(ROOT / "data/world/test.npz")[:a.n_test]
    classifier = load_expert(ROOT / "models/experts/world_classifier.safetensors")
    data = torch.from_numpy(np.ascontiguousarray(world.image[:a.n]))
    classifiers = [classifier] + [reseeded_classifier(classifier, world[:a.n], 100 + k, progress=False)
                                  for k in range(1, a.ensemble)]
    features = perceptual_maps(a.perceptual, classifiers,
                               load_expert(ROOT / "models/experts/world_segmenter.safetensors"), tuple(a.taps.split(",")))
    real = None
    if a.jitter:
        features = Jittered(features, a.jitter)
    else:
        real = _feature_targets(features, data)
    vae = make_vae(a)
    with _unfrozen(vae):
        seconds = train(a, vae, data, features, real)
    oracle = load_expert(ROOT / "models/experts/oracle.safetensors")
    result = reconstruction_accuracy(vae, oracle, test)
    result["psnr"] = vae_psnr(vae, test.image)
    print("RESULT", a.name, json.dumps({k: round(v, 3) for k, v in result.items()}), "seconds", round(seconds),
          flush=True)


if __name__ == "__main__":
    main()
