"""How far Mix-and-Match networks (ginn.baselines.mixmatch) get on zero-pair depth <-> segmentation in a fixed wall time.

Splits `--train` world scenes into disjoint D_RS (image, labels) and D_RD (image, depth), trains with one thread for
about `--seconds` in all, and prints, on the (depth, labels) pairs of `--test` scenes, the rows of Tables 4.3-4.5 of
Wang's thesis (Ch. 4) that fit:
  * M&MNets with pooling indices after stage 1 (no autoencoders, latent loss or noise: Table 4.3's first row), after
    stage 2 (M&MNets) and after stage 3 (M&MNets+PP); D->S mIoU (with / without background) and global accuracy,
    S->D delta < 1.25^k and RMSE (linear, log), the naive cascades D->R->S and S->R->D, the multi-modal (R,D)->S and
    the alignment factors AF_RS, AF_RD, AF_DS (Eq. 4.16) on the test triplets;
  * the side-information variants "none" and "skip" (stages 1-2), and the skip-connection cascade D->R->S;
  * the oracle: D->S and S->D trained directly on the (depth, labels) pairs of the same training scenes;
  * the floor of S->D: the best labels-only prediction (true object depth, mean background profile).
Time is shared out as `--shares` (M&MNets, skip, none, oracle); the parameter count and seconds of every row.

This is a measurement, not a test.

    OMP_NUM_THREADS=1 python bench/mixmatch_world.py --seconds 210
    OMP_NUM_THREADS=1 python bench/mixmatch_world.py --seconds 210 --lr 1e-3   # few steps: a larger rate
    OMP_NUM_THREADS=1 python bench/mixmatch_world.py --seconds 30 --train 1000 --test 200   # quick look
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from ginn.baselines.mixmatch import (MixMatchNets, MixMatchSettings, PairedTranslator, count_parameters, depth_floor,
                                     depth_scores, depth_tensor, evaluate_zero_pair, labels_tensor, predict,
                                     rgb_tensor, segmentation_scores, train_mixmatch, train_paired, zero_pair_split)
from ginn.world import make_world

MANY = 10 ** 9     # step caps: the wall time decides


def fmt_seg(s: dict) -> str:
    return f"mIoU {100 * s['miou']:5.1f}  mIoU-bg {100 * s['miou_no_bg']:5.1f}  global {100 * s['global_acc']:5.1f}"


def fmt_depth(d: dict) -> str:
    return (f"d<1.25 {d['delta1']:.3f}  d<1.25^2 {d['delta2']:.3f}  d<1.25^3 {d['delta3']:.3f}  "
            f"RMSE {d['rmse']:.4f}  RMSE(log) {d['rmse_log']:.4f}")


def report(name: str, rows: dict, seconds: float, params: int, out: dict, keys=("D->S", "S->D")):
    print(f"--- {name}: {params:,} parameters, {seconds:.0f} s of training")
    for k in keys:
        if k in rows:
            text = fmt_seg(rows[k]) if "miou" in rows[k] else fmt_depth(rows[k])
            print(f"  {k:12s} {text}")
    if "alignment" in rows:
        a = rows["alignment"]
        print(f"  alignment    AF_RS {a['rs']:.3f}  AF_RD {a['rd']:.3f}  AF_DS {a['ds']:.3f}")
    out[name] = dict(rows=rows, seconds=round(seconds, 1), parameters=params)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=210.0, help="training wall time of all rows together")
    p.add_argument("--shares", type=float, nargs=4, default=[0.5, 0.2, 0.15, 0.15],
                   help="time shares of M&MNets (3 stages), skip variant, none variant, oracle")
    p.add_argument("--train", type=int, default=4000)
    p.add_argument("--test", type=int, default=500)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-4, help="Adam learning rate (the thesis's 2e-4 is for 500K steps)")
    p.add_argument("--widths", type=int, nargs="+", default=[16, 32, 64], help="channels per encoder stage")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the results as one JSON line as well")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    train = make_world(args.train, seed=1000 + args.seed, n_captions=0)
    test = make_world(args.test, seed=3000 + args.seed, n_captions=0)
    split = zero_pair_split(train, seed=args.seed)
    print(f"worlds: {args.train} train scenes -> D_RS {len(split.rs_scenes)} + D_RD {len(split.rd_scenes)} "
          f"(no scene in both), {args.test} test scenes, in {time.perf_counter() - t0:.1f} s")
    probe = (rgb_tensor(test.image), depth_tensor(test.depth), labels_tensor(test.labels))
    share_mm, share_skip, share_none, share_oracle = (s * args.seconds for s in args.shares)
    out, stage_fractions = {}, (0.4, 0.4, 0.2)

    # ---- M&MNets with pooling indices: stage 1, then 2 (M&MNets), then 3 (+PP)
    common = dict(batch_size=args.batch_size, lr=args.lr, critic_lr=args.lr, widths=tuple(args.widths),
                  steps=(MANY, MANY, MANY), seed=args.seed)
    settings = MixMatchSettings(**common)
    print(f"settings: {settings}")
    nets = MixMatchNets.from_settings(settings)
    n_params = count_parameters(nets)
    spent, curves = 0.0, []
    for stages, name in (((1,), "stage 1 only (no AE, no L_LAT, no noise)"), ((2,), "M&MNets (PI)"),
                         ((3,), "M&MNets+PP (PI)")):
        k = stages[0]
        h = train_mixmatch(nets, split, settings, stages=stages, seconds=share_mm * stage_fractions[k - 1],
                           stage_fractions=(1.0, 1.0, 1.0), probe=probe, log_every=100)
        spent += h.seconds[0]
        curves += [(k, a) for a in h.alignment]
        print(f"stage {k}: {h.stage_steps[0]} steps in {h.seconds[0]:.0f} s "
              f"({1000 * h.seconds[0] / max(h.stage_steps[0], 1):.0f} ms/step); last losses "
              + ", ".join(f"{a} {b:.3f}" for a, b in h.losses[-1].items()))
        rows = evaluate_zero_pair(nets, test)
        report(name, rows, spent, n_params, out,
               keys=("D->S", "S->D", "D->R->S", "S->R->D", "(R,D)->S", "R->S (seen)", "R->D (seen)"))
    print("alignment over training (stage: AF_RS/AF_RD/AF_DS every 100 steps): "
          + "; ".join(f"{k}: {a['rs']:.2f}/{a['rd']:.2f}/{a['ds']:.2f}" for k, a in curves))

    # ---- side-information variants, stages 1-2
    for side, share in (("skip", share_skip), ("none", share_none)):
        if share <= 0:
            continue
        s = MixMatchSettings(**common, side=side)
        variant = MixMatchNets.from_settings(s)
        h = train_mixmatch(variant, split, s, stages=(1, 2), seconds=share, stage_fractions=(0.5, 0.5, 0.0),
                           log_every=100)
        rows = evaluate_zero_pair(variant, test, multimodal=False)
        report(f"M&MNets ({side}), stages 1-2, {sum(h.stage_steps)} steps", rows, sum(h.seconds),
               count_parameters(variant), out, keys=("D->S", "S->D", "D->R->S", "R->S (seen)"))

    # ---- the oracle: trained on (depth, labels) pairs of all training scenes
    if share_oracle > 0:
        depth, labels = depth_tensor(train.depth), labels_tensor(train.labels)
        for source, target, x, y, share in (("depth", "labels", depth, labels, 2 / 3),
                                            ("labels", "depth", labels, depth, 1 / 3)):
            oracle = PairedTranslator(source, target, settings.widths, settings.convs_per_stage, "indices")
            t1 = time.perf_counter()
            losses = train_paired(oracle, x, y, settings, steps=MANY, seconds=share * share_oracle)
            seconds = time.perf_counter() - t1
            x_test = probe[1] if source == "depth" else probe[2]
            with torch.no_grad():
                pred = predict(oracle, x_test)
            rows = ({"D->S": segmentation_scores(pred.argmax(1), probe[2])} if target == "labels" else
                    {"S->D": depth_scores(pred[:, 0], test.depth)})
            report(f"oracle {source}->{target} (paired), {len(losses)} steps", rows, seconds,
                   count_parameters(oracle), out)

    floor = depth_floor(test)
    print(f"--- floor of S->D (true object depth, mean background profile; labels cannot tell the scene): "
          f"{fmt_depth(floor)}")
    out["floor S->D"] = floor
    print(f"total {time.perf_counter() - t0:.0f} s")
    if args.json:
        print(json.dumps(out, default=float))


if __name__ == "__main__":
    main()
