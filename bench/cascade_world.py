"""How far the cascaded deep translation baseline (ginn.baselines.cascade) gets on circle <-> square world scenes in a
fixed wall time, next to the single-level translators of its depth ablation (Katzir et al., Table 1).

Rows (both directions, A = circle, B = square):
  * F3        the unconditional translator of the deepest level (`middle`, 64x4x4), inverted at F3;
  * F2        an unconditional translator of `early` (32x8x8) alone, inverted at F2;
  * cascade   F3 -> F2 (the conditional AdaIN translator on top of the F3 one, which it shares with the F3 row),
              inverted at F2;
  * references: the inverters' reconstructions of the real features (their ceiling), the counterfactual renders
    (the ground truth), and the untranslated source images.
Per row: target-shape rate (oracle shape = target), preservation of colour, size and position together (oracle
against the scene's true attributes), scene kept (reported apart: the paper says backgrounds are not preserved),
object-mask IoU of the oracle segmenter against the counterfactual's label map, and the Fréchet distance to the
target domain's real test images in the oracle's features.

The feature network (a world classifier) and the oracle are loaded from `--experts` (`world_classifier.safetensors`,
`oracle.safetensors`) when both are there, or else trained quickly here on their own scenes (said in the output).
`--seconds` is the wall time of the cascade's training proper: 3/4 for the three GAN trainings (F3, F2 alone, F2
conditional), 1/4 for the four inverters (F3 and F2, per domain). This is a measurement, not a test.

    OMP_NUM_THREADS=1 python bench/cascade_world.py --seconds 180
    OMP_NUM_THREADS=1 python bench/cascade_world.py --seconds 20 --scenes 3000   # quick look
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from ginn.baselines.cascade import CascadeSettings, counterfactual, fit_cascade
from ginn.experts.embedded import load_expert, save_expert, train_oracle, train_world_classifier
from ginn.metrics import frechet_distance
from ginn.world import SHAPES, make_world

SMALL = dict(width=32, critic_width=32, content_width=32, style_width=32, style_hidden=64, inverter_width=32,
             batch_size=32, n_critic=2)    # widths halved and fewer critic steps, for a CPU minute per level


def experts(args):
    "The feature network and the oracle: loaded from --experts if both are there, else trained here."
    d = Path(args.experts)
    if (d / "world_classifier.safetensors").is_file() and (d / "oracle.safetensors").is_file():
        print(f"experts: loaded from {d}")
        return load_expert(d / "world_classifier.safetensors"), load_expert(d / "oracle.safetensors"), "loaded"
    t0 = time.perf_counter()
    e = args.expert_epochs
    clf = train_world_classifier(make_world(args.expert_scenes, seed=100, n_captions=0), epochs=e, progress=False)
    oracle = train_oracle(make_world(args.expert_scenes, seed=101, n_captions=0), epochs=e, progress=False)
    print(f"experts: none in {d}; trained a world classifier (feature network, width 16, {e} epochs) and an oracle "
          f"(classifier width 20 + segmenter width 12, {e} epochs) on {args.expert_scenes} scenes each in "
          f"{time.perf_counter() - t0:.0f} s")
    if args.save_experts:
        out = Path(args.save_experts)
        out.mkdir(parents=True, exist_ok=True)
        save_expert(clf, out / "world_classifier.safetensors")
        save_expert(oracle, out / "oracle.safetensors")
    return clf, oracle, "trained here"


def domain(world, shape: str):
    return world[world.shape == SHAPES.index(shape)]


@torch.no_grad()
def score(oracle, images, source, target_shape: str, real_target, cf_labels) -> dict:
    "The oracle's reading of translated `images` of the `source` scenes, whose target shape is `target_shape`."
    att = {k: v.numpy() for k, v in oracle.attributes(images).items()}
    kept = (att["colour"] == source.colour) & (att["size"] == source.size) & (att["position"] == source.position)
    seg = oracle.segment(images).numpy() > 0
    truth = cf_labels > 0
    iou = (seg & truth).sum((1, 2)) / np.maximum((seg | truth).sum((1, 2)), 1)
    fd = frechet_distance(oracle.features(real_target).double(), oracle.features(images).double())
    return dict(target_shape=float((att["shape"] == SHAPES.index(target_shape)).mean()),
                preservation=float(kept.mean()), colour=float((att["colour"] == source.colour).mean()),
                size=float((att["size"] == source.size).mean()),
                position=float((att["position"] == source.position).mean()),
                scene=float((att["scene"] == source.scene).mean()), mask_iou=float(iou.mean()), fd=fd)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=180.0, help="training wall time of the rows, all together")
    p.add_argument("--scenes", type=int, default=12000, help="world scenes drawn for training (1/6 per shape)")
    p.add_argument("--test", type=int, default=3000, help="world scenes drawn for testing (1/6 per shape)")
    p.add_argument("--expert-scenes", type=int, default=8000)
    p.add_argument("--expert-epochs", type=int, default=2)
    p.add_argument("--experts", default="models/experts")
    p.add_argument("--save-experts", help="save the experts trained here to this folder")
    p.add_argument("--pair", default="circle,square")
    p.add_argument("--lr", type=float, default=None, help="translators' learning rate (default: the paper's 1e-4)")
    p.add_argument("--full-widths", action="store_true", help="the library's default widths instead of SMALL")
    p.add_argument("--downs", type=int, default=None, help="strided convs of the unconditional translators")
    p.add_argument("--n-critic", type=int, default=None)
    p.add_argument("--experts-only", action="store_true", help="train (and --save-experts) the experts, then stop")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    shape_a, shape_b = args.pair.split(",")

    clf, oracle, source_of_experts = experts(args)
    if args.experts_only:
        return
    t0 = time.perf_counter()
    train, test = make_world(args.scenes, seed=200 + args.seed, n_captions=0), make_world(args.test, seed=300, n_captions=0)
    a, b, ta, tb = domain(train, shape_a), domain(train, shape_b), domain(test, shape_a), domain(test, shape_b)
    print(f"domains: {shape_a} {len(a)} / {shape_b} {len(b)} training scenes, {len(ta)} / {len(tb)} test scenes "
          f"({time.perf_counter() - t0:.1f} s)")
    kw = {} if args.full_widths else dict(SMALL)
    for name in ("lr", "downs", "n_critic"):
        if getattr(args, name) is not None:
            kw[name] = getattr(args, name)
    gan, inv = 0.75 * args.seconds / 3, 0.25 * args.seconds / 4
    settings = {levels: CascadeSettings(levels=levels, **kw) for levels in ((3,), (2,), (3, 2))}
    print("settings (cascade):", json.dumps(settings[(3, 2)].to_dict()))

    rows, logs, t_rows = {}, {}, time.perf_counter()
    rows["F3"], logs["F3"] = fit_cascade(clf, a.image, b.image, settings[(3,)], seconds=gan, inverter_seconds=inv,
                                         seed=args.seed)
    rows["F2"], logs["F2"] = fit_cascade(clf, a.image, b.image, settings[(2,)], seconds=gan, inverter_seconds=inv,
                                         seed=args.seed)
    rows["cascade"], logs["cascade"] = fit_cascade(clf, a.image, b.image, settings[(3, 2)], seconds=gan,
                                                   pairs={3: rows["F3"].pairs["3"]},
                                                   inverters=dict(rows["F2"].inverters), seed=args.seed)
    print(f"training: {time.perf_counter() - t_rows:.0f} s in all")
    for name, log in logs.items():
        for level, h in log["levels"].items():
            if h is not None:
                print(f"  {name} level {level}: {h.step[-1]} steps in {h.seconds:.0f} s ({h.stopped}); cyc "
                      f"{np.mean(h.cyc[:10]):.3f} -> {np.mean(h.cyc[-10:]):.3f}, idty {np.mean(h.idty[:10]):.3f} -> "
                      f"{np.mean(h.idty[-10:]):.3f}, Wasserstein estimate {np.mean(h.wasserstein[-10:]):.3f}")
        for d, h in log["inverters"].items():
            if h is not None:
                print(f"  {name} inverter {d}: {h.step[-1]} steps, loss {np.mean(h.loss[:10]):.3f} -> "
                      f"{np.mean(h.loss[-10:]):.3f}")

    results = {}
    directions = (("b", ta, shape_a, shape_b, tb), ("a", tb, shape_b, shape_a, ta))
    for to, source, source_shape, target, real in directions:
        cf_image, cf_labels, _ = counterfactual(source, target)
        arrow = f"{source_shape}->{target}"
        table = {"counterfactual": score(oracle, cf_image, source, target, real.image, cf_labels),
                 "source": score(oracle, source.image, source, target, real.image, cf_labels),
                 "inverter (F2)": score(oracle, rows["cascade"].reconstruct(clf, source.image,
                                                                            "a" if to == "b" else "b"),
                                        source, target, real.image, cf_labels),
                 "inverter (F3)": score(oracle, rows["F3"].reconstruct(clf, source.image, "a" if to == "b" else "b"),
                                        source, target, real.image, cf_labels)}
        for name, cascade in rows.items():
            table[name] = score(oracle, cascade.translate(clf, source.image, to=to), source, target, real.image,
                                cf_labels)
        results[arrow] = table
        print(f"\n{arrow} ({len(source)} test scenes; oracle from {source_of_experts}; 'source' = untranslated; "
              f"the inverter rows reconstruct the source's own shape)")
        print(f"  {'row':16s}" + "".join(f"{k:>13s}" for k in table["source"]))
        for name, r in table.items():
            print(f"  {name:16s}" + "".join(f"{v:13.3f}" for v in r.values()))
    if args.json:
        print(json.dumps(dict(seconds=args.seconds, experts=source_of_experts, results=results)))


if __name__ == "__main__":
    main()
