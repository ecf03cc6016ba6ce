"""How far a small pixel-space cINN (ginn.baselines.pixel_cinn) gets on the `colourize` task in a fixed wall time.

Trains a `PixelCINN` on grey8 -> RGB of world scenes (32x32) with one thread for `--seconds`, then prints:
  * held-out bits/dim (dequantised, with the discretisation correction) before and after training;
  * the parameter count, steps run, seconds per step;
  * from K = 8 samples per test scene at each temperature, with a simple colour readout (mean RGB inside the eroded object mask, nearest
    palette colour of ginn.world.COLOUR_RGB; no oracle): consistency (sample colour in the set the grey level
    allows), coverage (share of ambiguous scenes whose samples show >= 2 allowed colours), determinism on
    unambiguous scenes and balance (TV distance from the uniform posterior); the same readout of the true test
    images, as the readout's own ceiling.

This is a measurement, not a test: it tells whether the task fits the pipeline's time budget.

    OMP_NUM_THREADS=1 python bench/pixel_cinn_world.py --seconds 180
    OMP_NUM_THREADS=1 python bench/pixel_cinn_world.py --seconds 20 --train 1000   # quick look
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from ginn.baselines.pixel_cinn import (PixelCINN, colour_scores, count_parameters, evaluate_pixel_cinn, grey8,
                                       object_colour, quantize, sample_many, train_pixel_cinn)
from ginn.world import make_world

ARCHITECTURES = {
    # blocks per level (32, 16, 8, 4 px), their conv widths, then the fully connected part and φ
    "small": dict(blocks=(1, 2, 2, 2), hidden=(16, 32, 32, 64), fc_blocks=2, fc_hidden=128, subnet_depth=1,
                  cond_widths=(8, 16, 32, 32), cond_flat=32),
    "medium": dict(blocks=(2, 4, 4, 4), hidden=(16, 32, 64, 64), fc_blocks=4, fc_hidden=256, subnet_depth=2,
                   cond_widths=(16, 32, 64, 64), cond_flat=64),
}


def condition(world) -> np.ndarray:
    return grey8(world.image)


def steps_for(model: PixelCINN, x, y, seconds: float, batch_size: int, probe: int = 5) -> int:
    "Steps that fit in `seconds`, from timing `probe` steps of a throwaway copy (first step excluded)."
    clone = PixelCINN(**model.config)
    clone.load_state_dict(model.state_dict())
    start = None
    for i in range(probe + 1):
        if i == 1:
            start = time.perf_counter()
        train_pixel_cinn(clone, x, y, steps=1, batch_size=batch_size, seed=i)
    per_step = (time.perf_counter() - start) / probe
    return max(1, int(seconds / per_step))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=180.0)
    p.add_argument("--train", type=int, default=5000)
    p.add_argument("--val", type=int, default=500)
    p.add_argument("--test", type=int, default=200)
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--arch", choices=sorted(ARCHITECTURES), default="small")
    p.add_argument("--phi", default="joint")
    p.add_argument("--actnorm", action="store_true")
    p.add_argument("--temperatures", type=float, nargs="+", default=[1.0, 0.8, 0.6])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the results as one JSON line as well")
    p.add_argument("--save", help="write the trained model's config and weights here (torch.save)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    t0 = time.perf_counter()
    train = make_world(args.train, seed=1000 + args.seed, n_captions=0)
    val = make_world(args.val, seed=2000 + args.seed, n_captions=0)
    test = make_world(args.test, seed=3000 + args.seed, n_captions=0)
    print(f"worlds: {args.train} train, {args.val} val, {args.test} test scenes in {time.perf_counter() - t0:.1f} s")

    model = PixelCINN(channels=3, size=32, cond_channels=1, phi=args.phi, actnorm=args.actnorm, seed=args.seed,
                      **ARCHITECTURES[args.arch])
    n_params = count_parameters(model)
    x, y = train.image, condition(train)
    steps = steps_for(model, x, y, args.seconds, args.batch_size)
    before = evaluate_pixel_cinn(model, val.image, condition(val))["bits_per_dim"]
    print(f"{args.arch} PixelCINN (phi={args.phi}, actnorm={args.actnorm}): {n_params:,} parameters; "
          f"{steps} steps planned for {args.seconds:.0f} s; val {before:.3f} bits/dim at initialisation")

    t0 = time.perf_counter()
    history = train_pixel_cinn(model, x, y, steps=steps, batch_size=args.batch_size, lr=args.lr,
                               val=(val.image, condition(val)), val_every=max(steps // 6, 1),
                               time_limit=1.2 * args.seconds, seed=args.seed)
    seconds = time.perf_counter() - t0
    after = evaluate_pixel_cinn(model, val.image, condition(val))["bits_per_dim"]
    curve = [round(float(v / model.dim / np.log(2) + 8), 3) for v in history.val_nll]
    print(f"trained {history.step[-1]} steps ({history.stopped}) in {seconds:.1f} s "
          f"({seconds / history.step[-1] * 1000:.0f} ms/step, {history.step[-1] * args.batch_size / args.train:.1f} "
          f"epochs); val bits/dim {after:.3f}; curve {curve}")

    if args.save:
        torch.save(dict(config=model.config, state=model.state_dict()), args.save)
    y_test = torch.as_tensor(condition(test))[:, None]
    masks = np.repeat(test.labels > 0, args.k, axis=0)
    truth = colour_scores(object_colour(test.image, test.labels > 0)[:, None], test.colour)
    print(f"readout of the true images: consistency {truth['consistency']:.3f}, "
          f"determinism {truth['determinism']:.3f}")
    results = {}
    for temperature in args.temperatures:
        t0 = time.perf_counter()
        samples = sample_many(model, y_test, k=args.k, temperature=temperature,
                              generator=torch.Generator().manual_seed(args.seed))
        images = quantize(samples.flatten(0, 1)).reshape(len(test), args.k, 32, 32, 3)
        sampled = object_colour(images.reshape(-1, 32, 32, 3), masks).reshape(len(test), args.k)
        scores = colour_scores(sampled, test.colour)
        scores["pixel_std"] = samples.std(1).mean().item() * 255       # per-pixel std over the k samples, in levels
        results[temperature] = scores
        print(f"T={temperature}: {args.k} samples x {len(test)} scenes in {time.perf_counter() - t0:.1f} s; "
              + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()))
    if args.json:
        print(json.dumps(dict(arch=args.arch, phi=args.phi, actnorm=args.actnorm, parameters=n_params,
                              steps=history.step[-1], seconds=round(seconds, 1), bits_per_dim=round(after, 4),
                              bits_per_dim_init=round(before, 4),
                              samples={t: {k: round(v, 4) for k, v in r.items()} for t, r in results.items()})))


if __name__ == "__main__":
    main()
