"""CPU speed and memory of ginn's `Translator` against a re-implementation of the authors' released model.

Measures, for two settings and batch sizes 16 and 64:
  * training throughput (samples/s) of a full step (forward + backward + optimiser step), ginn and reference
    interleaved in blocks of steps so that machine noise affects both alike; median per-step time;
  * the optimiser step's share of a training step;
  * sampling throughput (samples/s): eval mode, `torch.inference_mode()`, reverse pass from v ~ N(0, I);
  * peak RSS (MB) of training and of sampling, each in a fresh subprocess per (implementation, setting, batch);
  * achieved GFLOP/s, from an analytic count of the linear layers' FLOPs.

    python bench/translator_speed.py            # full run (~10 min on 2 cores), writes bench/results/translator_speed.json
    python bench/translator_speed.py --quick    # smoke check: setting A, batch 16, few iterations, no JSON unless --out
    python bench/translator_speed.py --pipeline # only the embedded pipeline's size (bench/pipeline_size.py), 1 and
                                                # 2 threads, with zuko and FrEIA if installed; merged into the JSON
"""
from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from reference_net2net import (build_reference, copy_reference_into_ginn, n_params,  # noqa: E402
                               reference_loss, reference_optimizer)

from ginn.io import write_json  # noqa: E402
from ginn.train import make_optimizer  # noqa: E402
from ginn.translator import Translator  # noqa: E402

COMMON = dict(hidden_dim=1024, hidden_depth=2, cond_hidden_dim=256, cond_depth=2, cond_batchnorm=True)
SETTINGS = {
    "A": dict(dim=128, cond_dim=128, n_flows=20, embedding_dim=128, **COMMON),
    "B": dict(dim=268, cond_dim=768, n_flows=24, embedding_dim=268, **COMMON),
}
BATCHES = (16, 64)
# samples/s of the paper authors' released code, measured once on this CPU (setting A only)
AUTHORS = {("A", 16): dict(train=21.0, sample=136.0), ("A", 64): dict(train=51.0, sample=277.0)}
PEAK_GFLOPS = 150.0          # middle of this CPU's measured matrix-multiply range, 110-180 GFLOP/s
MATMUL_RANGE = (110.0, 180.0)
PARAMS_A = 189_198_720       # both models in setting A (the paper's setting): ~189.2M
SEED = 0


# ---------------------------------------------------------------------------------------------------------
# models

def build(impl: str, setting: str):
    "A model of `setting` for `impl` in {'ginn', 'ref'}, seeded."
    cfg = SETTINGS[setting]
    torch.manual_seed(SEED)
    if impl == "ginn":
        return Translator(seed=SEED, **cfg)
    return build_reference(**cfg)


def lr_for(batch: int) -> float:
    return batch * 4.5e-6     # ginn.train.fit's default


def optimizer_for(impl: str, model, batch: int):
    if impl == "ginn":
        return make_optimizer(model, lr_for(batch), torch.device("cpu"))
    return reference_optimizer(model, lr_for(batch))


def loss_of(impl: str, model, z, c):
    if impl == "ginn":
        return model.nll(z, c).mean()
    return reference_loss(*model(z, c))


def sample_of(impl: str, model, c):
    if impl == "ginn":
        return model.sample(c, n=1)
    return model.reverse(torch.randn(c.shape[0], model.in_channels), c)


def linear_macs(model) -> int:
    "Multiply-accumulates per sample of all linear layers (nn.Linear and ginn's Dense): sum of in * out."
    return sum(m.weight.shape[0] * m.weight.shape[1] for m in model.modules()
               if isinstance(getattr(m, "weight", None), torch.Tensor) and m.weight.dim() == 2)


def data(setting: str, batch: int, n: int, seed: int):
    cfg = SETTINGS[setting]
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(batch, cfg["dim"], generator=g), torch.randn(batch, cfg["cond_dim"], generator=g))
            for _ in range(n)]


def train_step(impl, model, opt, z, c) -> tuple[float, float]:
    "One full training step as in `ginn.train.fit`; returns (step seconds, optimiser-step seconds)."
    t0 = time.perf_counter()
    loss = loss_of(impl, model, z, c)
    loss.item()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    t1 = time.perf_counter()
    opt.step()
    t2 = time.perf_counter()
    return t2 - t0, t2 - t1


# ---------------------------------------------------------------------------------------------------------
# child process: peak RSS of one (impl, setting, batch, mode)

def child(args) -> None:
    torch.manual_seed(SEED)
    model = build(args.impl, args.setting)
    rss_built = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    batches = data(args.setting, args.batch, args.iters, seed=1)
    if args.child == "train":
        model.train()
        opt = optimizer_for(args.impl, model, args.batch)
        for z, c in batches:
            train_step(args.impl, model, opt, z, c)
    else:
        model.eval()
        with torch.inference_mode():
            for _, c in batches:
                sample_of(args.impl, model, c)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024      # Linux: kB -> MB
    print(json.dumps(dict(peak_rss_mb=rss, rss_after_build_mb=rss_built, vm_hwm_mb=_vm_hwm_mb())))


def _vm_hwm_mb() -> float | None:
    "Peak RSS of this process's address space (/proc/self/status VmHWM), a cross-check of ru_maxrss."
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def measure_rss(impl: str, setting: str, batch: int, mode: str, iters: int) -> dict:
    """Peak RSS of a fresh child process. Linux carries ru_maxrss over fork + exec from the parent's peak at
    fork time, so this is called before the parent builds any model (the parent is then ~0.5 GB)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", mode, "--impl", impl,
           "--setting", setting, "--batch", str(batch), "--iters", str(iters)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------------------
# timing in this process

def bench_setting(setting: str, batches, train_steps: int, block: int, warmup: int, sample_passes: int,
                  log) -> dict:
    ref = build("ref", setting)
    tau = build("ginn", setting)
    n_ref, n_tau = n_params(ref), n_params(tau)
    assert n_ref == n_tau, f"parameter counts differ: ginn {n_tau}, reference {n_ref}"
    if setting == "A":
        assert n_tau == PARAMS_A, f"setting A should have {PARAMS_A} parameters, got {n_tau}"
    macs_ref, macs_tau = linear_macs(ref), linear_macs(tau)
    assert macs_ref == macs_tau, (macs_ref, macs_tau)
    # identical weights, so that both run the same numbers (ActNorm still initialises from the first batch)
    copy_reference_into_ginn(ref, tau)
    with torch.no_grad():
        for layer, blk in zip(ref.sub_layers, tau.flow.blocks):
            layer.norm_layer.initialized.fill_(0)
            blk.norm.initialized.fill_(False)
    models = dict(ginn=tau, ref=ref)
    opts = {}
    res = dict(params=n_tau, linear_macs_per_sample=macs_tau, batches={})
    log(f"setting {setting}: {n_tau / 1e6:.1f}M parameters in each model, "
        f"{2 * macs_tau / 1e9:.3f} GFLOP per sample forward")
    for batch in batches:
        r = res["batches"][str(batch)] = {}
        # ---- training
        steps = data(setting, batch, warmup + train_steps, seed=batch)
        times = {k: [] for k in models}
        opt_times = {k: [] for k in models}
        for impl, model in models.items():
            model.train()
            if impl not in opts:
                opts[impl] = optimizer_for(impl, model, batch)
            for g in opts[impl].param_groups:
                g["lr"] = lr_for(batch)
        order = ["ginn", "ref"]
        for impl in order:                                   # warm-up: optimiser state, oneDNN primitives
            for z, c in steps[:warmup]:
                train_step(impl, models[impl], opts[impl], z, c)
        i = warmup
        while i < warmup + train_steps:
            chunk = steps[i:i + block]
            for impl in order:
                for z, c in chunk:
                    t, t_opt = train_step(impl, models[impl], opts[impl], z, c)
                    times[impl].append(t)
                    opt_times[impl].append(t_opt)
            order.reverse()                                  # alternate who goes first
            i += block
        for impl in models:
            step = statistics.median(times[impl])
            opt_t = statistics.median(opt_times[impl])
            flops = 3 * 2 * macs_tau * batch
            r[f"train_{impl}"] = dict(
                samples_per_s=batch / step, step_s=step, step_times_s=times[impl], optimizer_step_s=opt_t,
                optimizer_share=opt_t / step, gflops=flops / step / 1e9,
                gflops_without_optimizer=flops / (step - opt_t) / 1e9,
                fraction_of_150=flops / step / 1e9 / PEAK_GFLOPS)
        log(f"  batch {batch:3d} train   ginn {r['train_ginn']['samples_per_s']:7.1f}/s "
            f"(opt {100 * r['train_ginn']['optimizer_share']:.0f}%)   ref {r['train_ref']['samples_per_s']:7.1f}/s "
            f"(opt {100 * r['train_ref']['optimizer_share']:.0f}%)")
        # ---- sampling
        sample_warmup = 4                                    # oneDNN primitives for the new shapes
        conds = [c for _, c in data(setting, batch, sample_warmup + sample_passes, seed=100 + batch)]
        times = {k: [] for k in models}
        with torch.inference_mode():
            for impl, model in models.items():
                model.eval()
                for c in conds[:sample_warmup]:
                    sample_of(impl, model, c)
            order = ["ginn", "ref"]
            sblock = max(1, sample_passes // 5)
            i = sample_warmup
            while i < len(conds):
                chunk = conds[i:i + sblock]
                for impl in order:
                    for c in chunk:
                        t0 = time.perf_counter()
                        sample_of(impl, models[impl], c)
                        times[impl].append(time.perf_counter() - t0)
                order.reverse()
                i += sblock
        for impl in models:
            t = statistics.median(times[impl])
            flops = 2 * macs_tau * batch
            r[f"sample_{impl}"] = dict(samples_per_s=batch / t, pass_s=t, pass_times_s=times[impl],
                                       gflops=flops / t / 1e9, fraction_of_150=flops / t / 1e9 / PEAK_GFLOPS)
        log(f"  batch {batch:3d} sample  ginn {r['sample_ginn']['samples_per_s']:7.1f}/s   "
            f"ref {r['sample_ref']['samples_per_s']:7.1f}/s")
    del models, opts, ref, tau
    _release_memory()
    return res


def _release_memory() -> None:
    "Free the models and hand the freed heap back to the OS before the next setting."
    gc.collect()
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def matmul_gflops() -> dict:
    "Plain sgemm throughput on this machine, for context: a Translator layer's shapes and a square one."
    out = {}
    for name, (m, k, n) in {"64x1024x1024": (64, 1024, 1024), "1024x1024x1024": (1024, 1024, 1024)}.items():
        a, b = torch.randn(m, k), torch.randn(k, n)
        for _ in range(3):
            a @ b
        reps = max(3, int(2e10 / (2 * m * k * n)))
        t0 = time.perf_counter()
        for _ in range(reps):
            a @ b
        out[name] = 2 * m * k * n * reps / (time.perf_counter() - t0) / 1e9
    return out


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def table(results: dict) -> str:
    lines = []
    hdr = (f"{'setting':8s}{'batch':>6s} | {'ginn':>8s}{'ref':>8s}{'authors':>9s}{'g/ref':>7s}{'g/auth':>7s} |"
           f" {'GFLOP/s g':>10s}{'ref':>6s} | {'opt% g':>7s}{'ref':>5s} | {'RSS MB g':>9s}{'ref':>7s}")
    for kind in ("train", "sample"):
        lines.append(f"{kind.upper()} (samples/s; GFLOP/s as fraction of {PEAK_GFLOPS:.0f})")
        lines.append(hdr)
        lines.append("-" * len(hdr))
        for s, sres in results["settings"].items():
            for b, r in sres["batches"].items():
                g, f = r[f"{kind}_ginn"], r[f"{kind}_ref"]
                a = AUTHORS.get((s, int(b)), {}).get(kind)
                auth = f"{a:9.0f}" if a else f"{'-':>9s}"
                gauth = f"{g['samples_per_s'] / a:6.2f}x" if a else f"{'-':>7s}"
                opt = (f"{100 * g['optimizer_share']:6.0f}%{100 * f['optimizer_share']:4.0f}%"
                       if kind == "train" else f"{'-':>7s}{'-':>5s}")
                rss_g = r.get(f"rss_{kind}_ginn", {}).get("peak_rss_mb")
                rss_f = r.get(f"rss_{kind}_ref", {}).get("peak_rss_mb")
                rss = f"{rss_g:9.0f}{rss_f:7.0f}" if rss_g and rss_f else f"{'-':>9s}{'-':>7s}"
                lines.append(
                    f"{s + ' d' + str(SETTINGS[s]['dim']):8s}{b:>6s} | {g['samples_per_s']:8.1f}{f['samples_per_s']:8.1f}"
                    f"{auth}{g['samples_per_s'] / f['samples_per_s']:6.2f}x{gauth} |"
                    f" {g['gflops']:5.0f}={g['fraction_of_150']:4.2f}{f['gflops']:6.0f} | {opt} | {rss}")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="setting A, batch 16, few iterations (smoke check)")
    p.add_argument("--out", type=Path, default=None,
                   help="JSON output (default: bench/results/translator_speed.json; none with --quick)")
    p.add_argument("--no-rss", action="store_true", help="skip the peak-RSS subprocesses")
    p.add_argument("--pipeline", action="store_true",
                   help="only the pipeline's size (d=64, c=384, 6 flows, width 128), via bench/pipeline_size.py")
    p.add_argument("--child", choices=["train", "sample"], help=argparse.SUPPRESS)
    p.add_argument("--impl", choices=["ginn", "ref"], help=argparse.SUPPRESS)
    p.add_argument("--setting", choices=list(SETTINGS), help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    p.add_argument("--iters", type=int, default=3, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return
    if args.pipeline:
        for threads in (1, 2):            # a subprocess each: the thread count is set before torch starts work
            cmd = [sys.executable, str(HERE / "pipeline_size.py"), "--threads", str(threads)]
            subprocess.run(cmd + (["--out", str(args.out)] if args.out else []), check=True, cwd=ROOT)
        return
    torch.manual_seed(SEED)
    t_start = time.perf_counter()
    out = args.out if args.out is not None else (None if args.quick else HERE / "results" / "translator_speed.json")
    log = lambda msg: print(msg, flush=True)  # noqa: E731
    if args.quick:
        plan = {"A": dict(batches=(16,), train_steps=3, block=1, warmup=1, sample_passes=3)}
    else:
        plan = {"A": dict(batches=BATCHES, train_steps=16, block=2, warmup=2, sample_passes=20),
                "B": dict(batches=BATCHES, train_steps=12, block=2, warmup=2, sample_passes=12)}
    log(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU: {cpu_model()}")
    mm = matmul_gflops()
    log("plain sgemm on this machine: " + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in mm.items()))
    results = dict(
        date=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), torch=torch.__version__,
        cpu=cpu_model(), threads=torch.get_num_threads(), python=platform.python_version(), quick=args.quick,
        seed=SEED, plan={k: dict(v) for k, v in plan.items()}, settings_config=SETTINGS,
        peak_gflops_assumed=PEAK_GFLOPS, matmul_range_gflops=MATMUL_RANGE, measured_sgemm_gflops=mm,
        authors_figures={f"{s}/{b}": v for (s, b), v in AUTHORS.items()},
        optimizers=dict(ginn="Adam(betas=(0.5, 0.9), amsgrad=True, fused=True)  [ginn.train.make_optimizer]",
                        ref="Adam(betas=(0.5, 0.9), amsgrad=True), default impl: single-tensor for-loop on CPU"),
        losses=dict(ginn="Translator.nll(z_theta, z_phi).mean()", ref="mean(0.5*sum(v**2, 1) - logdet)"),
        flop_count="2*in*out*batch per linear layer forward; training = 3x forward; sampling = 1x forward",
        settings={})
    rss: dict = {}
    if not args.no_rss:
        log("peak RSS, one fresh subprocess each ...")
        for setting, kw in plan.items():
            for batch in kw["batches"]:
                r = rss.setdefault(setting, {}).setdefault(str(batch), {})
                for mode in ("train", "sample"):
                    for impl in ("ginn", "ref"):
                        r[f"rss_{mode}_{impl}"] = measure_rss(impl, setting, batch, mode, iters=3)
                log(f"  {setting} batch {batch}: train ginn {r['rss_train_ginn']['peak_rss_mb']:.0f} MB, "
                    f"ref {r['rss_train_ref']['peak_rss_mb']:.0f} MB; sample ginn "
                    f"{r['rss_sample_ginn']['peak_rss_mb']:.0f} MB, ref {r['rss_sample_ref']['peak_rss_mb']:.0f} MB")
    for setting, kw in plan.items():
        results["settings"][setting] = bench_setting(setting, log=log, **kw)
        for batch, r in rss.get(setting, {}).items():
            results["settings"][setting]["batches"][batch].update(r)
    mm_end = matmul_gflops()
    results["measured_sgemm_gflops_end"] = mm_end
    log("plain sgemm at the end (machine-noise check): "
        + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in mm_end.items()))
    results["wall_s"] = time.perf_counter() - t_start
    txt = table(results)
    results["table"] = txt
    print()
    print(txt)
    print(f"GFLOP/s: linear-layer FLOPs only (2*in*out per sample forward, training = 3x forward) per "
          f"measured time; '=x.xx' is the fraction of {PEAK_GFLOPS:.0f} GFLOP/s, the middle of this CPU's "
          f"matrix-multiply range of {MATMUL_RANGE[0]:.0f}-{MATMUL_RANGE[1]:.0f} GFLOP/s.")
    print("authors = the paper authors' code on this CPU, measured once (setting A only). "
          "opt% = share of the optimiser step in a training step. RSS = peak RSS of a fresh process.")
    print(f"total {results['wall_s']:.0f} s")
    if out is not None:
        write_json(results, out)
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
