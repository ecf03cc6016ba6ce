"""The UDIT parts of `ginn.baselines.domain_translation` (the `bias` experiment): the biased split, the bottleneck
width rule of the semantic extractor, MUNIT's shapes and its pooling indices, resuming an adversarial run, the
settings of a section."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ginn.baselines.domain_translation import (COOL, MUNIT, WARM, LoopCheckpoint, MUNITDomain, _loop, biased_split,
                                                bottleneck_width, check_domain_translation, domain_translation_runs)
from ginn.world import COLOURS, SCENES


def _world(n: int = 4000, seed: int = 0):
    rng = np.random.default_rng(seed)
    return SimpleNamespace(scene=rng.integers(0, len(SCENES), n), colour=rng.integers(0, len(COLOURS), n))


def test_biased_split_has_the_stated_colour_ratios():
    world = _world()
    rows_a, rows_b = biased_split(world, 600, 400, 0.05)
    assert len(rows_a) == 600 and len(rows_b) == 400 and not set(rows_a) & set(rows_b)
    assert (world.scene[rows_a] == SCENES.index("sky")).all() and (world.scene[rows_b] == SCENES.index("night")).all()
    warm = np.isin(world.colour[rows_b], [COLOURS.index(c) for c in WARM])
    cool = np.isin(world.colour[rows_b], [COLOURS.index(c) for c in COOL])
    assert warm.sum() == 20 and cool.sum() == 380
    warm_a = np.isin(world.colour[rows_a], [COLOURS.index(c) for c in WARM]).mean()
    assert 0.4 < warm_a < 0.6                                  # domain A keeps the world's balanced colours
    with pytest.raises(ValueError, match="too few"):
        biased_split(world, 600, 4000, 0.05)


def test_bottleneck_width_is_the_smallest_that_keeps_the_accuracy():
    acc = {1: 0.53, 2: 0.91, 4: 0.995, 8: 1.0, 16: 0.999}
    assert bottleneck_width(acc, 1.0, 0.01) == 4
    assert bottleneck_width(acc, 1.0, 0.1) == 2
    assert bottleneck_width(acc, 1.0, 0.0) == 8
    with pytest.raises(ValueError, match="no width"):
        bottleneck_width(acc, 1.0, -0.01)


def test_munit_translates_with_a_drawn_or_given_style():
    torch.manual_seed(0)
    model = MUNIT((16, 4, 4), width=8, blocks=1, style_dim=8, mlp_hidden=8)
    e = torch.randn(3, 16, 4, 4)
    g = lambda: torch.Generator().manual_seed(1)
    assert model.translate(e, "b", generator=g()).shape == e.shape
    assert torch.equal(model.translate(e, "b", generator=g()), model.translate(e, "b", generator=g()))
    s = torch.randn(3, 8)
    assert not torch.allclose(model.translate(e, "b", s), model.translate(e, "b", s + 1))


def test_pooling_indices_are_the_side_information_the_decoder_unpools_with():
    torch.manual_seed(0)
    pi, plain = MUNITDomain((16, 4, 4), width=8, blocks=1, pi=True), MUNITDomain((16, 4, 4), width=8, blocks=1)
    e, style = torch.randn(3, 16, 4, 4), torch.randn(3, 8)
    content, indices = pi.encode(e)
    assert content.shape == (3, 8, 2, 2) and indices.shape == (3, 8, 2, 2)   # half as wide, and where the maxima were
    assert plain.encode(e)[0].shape == (3, 8, 4, 4) and plain.encode(e)[1] is None
    assert pi.decode(content, style, indices).shape == e.shape
    moved = indices ^ 1                                        # the same maxima, each one column over
    assert not torch.allclose(pi.decode(content, style, indices), pi.decode(content, style, moved))
    with pytest.raises(ValueError, match="pooling indices"):
        pi.decode(content, style)
    model = MUNIT((16, 4, 4), width=8, blocks=1, style_dim=8, mlp_hidden=8, pi=True)
    assert model.translate(e, "b", style).shape == e.shape and model.config["pi"] is True


def _adversarial_run(path, steps: int = 10, stop_at: int | None = None, settings=None):
    "A toy alternating run with every kind of state a real row has: a module, Adam, a generator, torch's global RNG."
    torch.manual_seed(0)
    net = torch.nn.Linear(4, 1)
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    gen = torch.Generator().manual_seed(1)
    count = {"steps": 0}

    def g_step(x):
        count["steps"] += 1
        if stop_at is not None and count["steps"] == stop_at:
            raise KeyboardInterrupt
        loss = (net(x + torch.randn(x.shape)) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        return float(loss)

    ckpt = LoopCheckpoint(path, settings or {"lr": 0.01}, {"net": net, "opt": opt}, {"gen": gen})
    curves = _loop(steps, 2, lambda: torch.randn(8, 4, generator=gen), g_step, lambda: float(net.weight.sum()), ckpt)
    return curves, net.state_dict(), count["steps"]


def test_a_resumed_adversarial_run_ends_where_an_uninterrupted_one_does(tmp_path):
    straight, weights, _ = _adversarial_run(tmp_path / "a.pt")
    with pytest.raises(KeyboardInterrupt):
        _adversarial_run(tmp_path / "b.pt", stop_at=8)        # stopped after the checkpoint of step 6
    resumed, resumed_weights, ran = _adversarial_run(tmp_path / "b.pt")
    assert ran == 4                                            # steps 7-10 only
    assert resumed == straight
    assert all(torch.equal(weights[k], resumed_weights[k]) for k in weights)
    _, _, ran = _adversarial_run(tmp_path / "b.pt", settings={"lr": 0.02})
    assert ran == 10                                           # a checkpoint of other settings is not resumed
    (tmp_path / "c.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="delete it"):
        _adversarial_run(tmp_path / "c.pt")


def test_check_names_the_bad_key():
    ok = dict(task="bias", warm_fraction=0.05, n_a=10, n_b=10, rows=["munit", "udit"], munit={},
              extractor={"widths": [1, 4], "tolerance": 0.01, "steps": 2, "lr": 0.01}, steps=2, n_val=4, log_every=1,
              n2n={"train": {}})
    check_domain_translation(ok, "w")
    assert domain_translation_runs({"domain_translation": ok}) == ["munit", "udit", "n2n.domain", "n2n.domain_colour"]
    for bad, message in [({"warm_fraction": 1.5}, r"w.warm_fraction"), ({"rows": ["cyclegan"]}, r"w.rows"),
                         ({"extractor": {"widths": [4, 1]}}, r"w.extractor"), ({"n_b": 0}, r"w.n_b")]:
        with pytest.raises(ValueError, match=message):
            check_domain_translation({**ok, **bad}, "w")
