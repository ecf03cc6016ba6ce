"""The UDIT parts of `ginn.baselines.domain_translation` (the `bias` experiment): the biased split, the bottleneck
width rule of the semantic extractor, MUNIT's shapes, the settings of a section."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ginn.baselines.domain_translation import (COOL, MUNIT, WARM, biased_split, bottleneck_width,
                                                check_domain_translation, domain_translation_runs)
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
