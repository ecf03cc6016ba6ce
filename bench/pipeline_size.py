"""Training and sampling speed at the size the embedded pipeline trains, ginn against the authors' code and,
when installed, zuko's RealNVP and FrEIA's GLOW coupling stack (both optional: skipped if missing).

`ginn_bf16` is ginn with the training step's matrix products in bfloat16 (`precision: bf16`, the default profile's
setting); its sampling is float32 like everyone's.

Size: z_Θ of 64, condition of 384, 6 flow blocks, coupling width 128 (depth 2), embedding 64, conditioning MLP
of width 128 and depth 2 with BatchNorm. Every model uses the same optimiser, `ginn.train.make_optimizer`'s
Adam (betas (0.5, 0.9), AMSGrad, fused). The models are timed interleaved in one process, in rounds, so that
machine noise hits all alike; the figure is the median over rounds of samples/s.

    python bench/pipeline_size.py --threads 1 --label after        # merges into bench/results/translator_speed.json
    python bench/pipeline_size.py --ginn-from /tmp/old --label before   # an older ginn package, for before/after

Called by `bench/translator_speed.py --pipeline`.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

SIZE = dict(dim=64, cond_dim=384, n_flows=6, hidden_dim=128, hidden_depth=2, embedding_dim=64,
            cond_hidden_dim=128, cond_depth=2, cond_batchnorm=True)


def competitors(torch, mlp):
    "Builders of the optional competitors that are installed: name -> () -> (module, loss(z, c), sample(c))."
    out = {}
    s = SIZE
    half = s["dim"] // 2

    def embedder():
        return mlp(s["cond_dim"], s["cond_hidden_dim"], s["cond_depth"], s["embedding_dim"], s["cond_batchnorm"])
    try:
        import zuko

        def build_zuko():
            torch.manual_seed(0)
            net = torch.nn.ModuleDict(dict(
                embed=embedder(),
                flow=zuko.flows.RealNVP(s["dim"], context=s["embedding_dim"], transforms=2 * s["n_flows"],
                                        hidden_features=(s["hidden_dim"],) * s["hidden_depth"])))
            return (net, lambda z, c: -net["flow"](net["embed"](c)).log_prob(z).mean(),
                    lambda c: net["flow"](net["embed"](c)).sample())
        out["zuko"] = build_zuko
    except ImportError:
        pass
    try:
        import FrEIA.framework as Ff
        import FrEIA.modules as Fm

        def subnet(c_in, c_out):
            w = s["hidden_dim"]
            return torch.nn.Sequential(torch.nn.Linear(c_in, w), torch.nn.ReLU(), torch.nn.Linear(w, w),
                                       torch.nn.ReLU(), torch.nn.Linear(w, c_out))

        def build_freia():
            torch.manual_seed(0)
            inn = Ff.SequenceINN(s["dim"])
            for _ in range(s["n_flows"]):
                inn.append(Fm.GLOWCouplingBlock, subnet_constructor=subnet, cond=0, cond_shape=(s["embedding_dim"],))
                inn.append(Fm.PermuteRandom)
            net = torch.nn.ModuleDict(dict(embed=embedder(), inn=inn))

            def loss(z, c):
                v, log_jac = net["inn"](z, c=[net["embed"](c)])
                return (0.5 * v.pow(2).sum(1) - log_jac).mean()

            def sample(c):
                return net["inn"](torch.randn(c.shape[0], s["dim"]), c=[net["embed"](c)], rev=True)[0]
            return net, loss, sample
        out["freia"] = build_freia
    except ImportError:
        pass
    del half
    return out


def run(threads: int, batches, rounds: int, per_round: int, ginn_from: str | None) -> dict:
    if ginn_from:
        sys.path.insert(0, ginn_from)
    sys.path.insert(1, str(HERE))
    sys.path.insert(2, str(ROOT))
    import torch
    torch.set_num_threads(threads)
    import ginn
    from ginn.train import make_optimizer
    from ginn.translator import Translator, mlp
    from reference_net2net import build_reference, copy_reference_into_ginn, n_params, reference_loss

    def build_ginn_ref():
        torch.manual_seed(0)
        ref = build_reference(**SIZE)
        tau = Translator(seed=0, **SIZE)
        copy_reference_into_ginn(ref, tau)          # the same weights: both compute the same numbers
        return tau, ref

    tau, ref = build_ginn_ref()
    models = {"ginn": (tau, lambda z, c: tau.nll(z, c).mean(), lambda c: tau.sample(c)),
              "ref": (ref, lambda z, c: reference_loss(*ref(z, c)),
                      lambda c: ref.reverse(torch.randn(c.shape[0], SIZE["dim"]), c))}
    try:                            # the bfloat16 training step (ginn.train.training_precision), when this ginn has it
        from ginn.train import training_precision
        tau16, _ = build_ginn_ref()

        def bf16_loss(z, c):
            with training_precision("bf16", torch.device("cpu")):
                return tau16.nll(z, c).mean()
        models["ginn_bf16"] = (tau16, bf16_loss, lambda c: tau16.sample(c))   # sampling stays float32
    except ImportError:
        pass
    for name, build in competitors(torch, mlp).items():
        models[name] = build()
    res = dict(threads=threads, ginn_module=str(Path(ginn.__file__).parent), size=SIZE,
               params={k: n_params(m) for k, (m, _, _) in models.items()}, batches={})
    for batch in batches:
        g = torch.Generator().manual_seed(batch)
        z, c = torch.randn(batch, SIZE["dim"], generator=g), torch.randn(batch, SIZE["cond_dim"], generator=g)
        opts = {k: make_optimizer(m, batch * 4.5e-6, torch.device("cpu")) for k, (m, _, _) in models.items()}

        def step(k):
            m, loss_fn, _ = models[k]
            loss = loss_fn(z, c)
            opts[k].zero_grad(set_to_none=True)
            loss.backward()
            opts[k].step()
        train, sample = {k: [] for k in models}, {k: [] for k in models}
        for k, (m, _, _) in models.items():
            m.train()
            for _ in range(2):
                step(k)
        for r in range(rounds):
            for k in (list(models) if r % 2 == 0 else list(models)[::-1]):
                t0 = time.perf_counter()
                for _ in range(per_round):
                    step(k)
                train[k].append(batch * per_round / (time.perf_counter() - t0))
        with torch.inference_mode():
            for k, (m, _, s) in models.items():
                m.eval()
                s(c)
            for r in range(rounds):
                for k in (list(models) if r % 2 == 0 else list(models)[::-1]):
                    t0 = time.perf_counter()
                    for _ in range(per_round):
                        models[k][2](c)
                    sample[k].append(batch * per_round / (time.perf_counter() - t0))
        res["batches"][str(batch)] = {k: dict(train_samples_per_s=statistics.median(train[k]),
                                              train_steps_per_s=statistics.median(train[k]) / batch,
                                              sample_samples_per_s=statistics.median(sample[k]))
                                      for k in models}
        row = res["batches"][str(batch)]
        print(f"{threads} thr, batch {batch:4d}: " + "  ".join(
            f"{k} train {v['train_samples_per_s']:6.0f}/s sample {v['sample_samples_per_s']:6.0f}/s"
            for k, v in row.items()), flush=True)
    return res


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batches", type=int, nargs="+", default=[128, 256, 512])
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--per-round", type=int, default=3)
    p.add_argument("--label", default="after", help="key under which the run is stored (e.g. before / after)")
    p.add_argument("--ginn-from", default=None, help="a directory holding another `ginn` package to time")
    p.add_argument("--out", type=Path, default=HERE / "results" / "translator_speed.json")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    res = run(args.threads, args.batches, args.rounds, args.per_round, args.ginn_from)
    if args.no_write:
        return
    data = json.loads(args.out.read_text()) if args.out.is_file() else {}
    section = data.setdefault("pipeline_size", dict(size=SIZE, runs={}))
    section["runs"][f"{args.label}/{args.threads}thr"] = res
    args.out.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {args.out} [pipeline_size/runs/{args.label}/{args.threads}thr]")


if __name__ == "__main__":
    main()
