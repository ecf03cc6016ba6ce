"""The shape-swap runs (ginn.baselines.shapeswap): the params section is checked with errors that name the key, the
runs are listed longest first, a saved row loads bit-exactly, and an interrupted pair run resumes at the unit it
reached without retraining a finished one."""
import json

import numpy as np
import pytest
import torch

from ginn.baselines.shapeswap import (check_shapeswap, load_cascade, pair_rows, shapeswap_path, shapeswap_runs,
                                      train_pair)
from ginn.config import Layout
from ginn.experts.embedded import ConvClassifier, save_expert
from ginn.world import make_world, save_world

pytestmark = pytest.mark.usefixtures("one_thread")

SECTION = dict(pairs=[["circle", "star"], ["circle", "square"]],
               cascade={"width": 8, "critic_width": 8, "content_width": 8, "style_width": 8, "style_hidden": 8,
                        "inverter_width": 16, "batch_size": 8, "inverter_batch_size": 8, "n_critic": 1},
               steps={"f3": 3, "f2": 2}, inverter_steps=2, ablations=["no_cycle", "no_adversarial"],
               ablation_pairs=[["circle", "square"]], n2n={"train": {"steps": 4, "batch_size": 16}}, n_val=6,
               log_every=2)


@pytest.mark.parametrize("change, message", [
    (dict(ablations=["no_gp"]), r"ss.ablations: lists loss ablations among no_cycle"),
    (dict(cascade={"widht": 8}), r"ss.cascade: unknown setting\(s\) \['widht'\]"),
    (dict(pairs=[["circle", "hexagon"]]), r"ss.pairs: must list pairs \[A, B\] of two different shapes"),
    (dict(ablation_pairs=[["square", "star"]]), r"ss.ablation_pairs: must be among `pairs`"),
    (dict(steps={"f3": 3}), r"ss.steps: must map f3 and f2"),
    (dict(steps={"f3": 3, "f2": 0}), r"ss.steps.f2: must be a positive integer"),
    (dict(log_every=True), r"ss.log_every: must be a positive integer"),
    (dict(n2n={}), r"ss.n2n: must be a mapping with exactly the key train"),
    (dict(extra=1), r"ss: must be a mapping with exactly the keys pairs, cascade"),
])
def test_bad_sections_name_the_key(change, message):
    check_shapeswap(SECTION, "ss")
    with pytest.raises(ValueError, match=message):
        check_shapeswap({**SECTION, **change}, "ss")


def test_runs_are_listed_longest_first_and_only_with_a_section():
    assert shapeswap_runs({}) == []
    assert shapeswap_runs({"shapeswap": SECTION}) == ["circle-square", "circle-star", "n2n"]   # the ablated pair first
    assert list(pair_rows(SECTION, ["circle", "square"])) == ["cascade", "f3", "f2", "f3_no_cycle", "f3_no_adversarial"]
    assert list(pair_rows(SECTION, ["circle", "star"])) == ["cascade", "f3", "f2"]


@pytest.fixture()
def layout(tmp_path):
    layout = Layout(tmp_path)
    for split, n, seed in (("train", 90, 0), ("val", 60, 1)):
        layout.data("world", split).parent.mkdir(parents=True, exist_ok=True)
        save_world(make_world(n, seed=seed, n_captions=0), layout.data("world", split))
    torch.manual_seed(0)
    layout.experts().mkdir(parents=True)
    save_expert(ConvClassifier(width=4, name="world_classifier"), layout.expert("world_classifier"))  # untrained
    return layout


def test_an_interrupted_pair_run_resumes_without_retraining_a_finished_unit(layout, monkeypatch):
    import ginn.baselines.shapeswap as ss_module
    calls = []
    real = ss_module.train_level

    def counting(pair, a, b, settings, **kw):
        calls.append((pair.level, pair.conditional, settings.lambda_cyc, settings.lambda_adv))
        if len(calls) == 2:
            raise KeyboardInterrupt          # interrupted in the second unit (F2 | F3)
        return real(pair, a, b, settings, **kw)
    monkeypatch.setattr(ss_module, "train_level", counting)
    with pytest.raises(KeyboardInterrupt):
        train_pair(SECTION, layout, "ss", ["circle", "square"])
    summary = train_pair(SECTION, layout, "ss", ["circle", "square"])
    assert calls[0] == (3, False, 100.0, 1.0) and calls.count(calls[0]) == 1     # F3 was not retrained
    assert calls[1] == calls[2] == (2, True, 100.0, 1.0)                          # F2 | F3 restarted
    assert calls[3:] == [(2, False, 100.0, 1.0), (3, False, 0.0, 1.0), (3, False, 100.0, 0.0)]
    assert summary["name"] == "circle-square" and summary["steps"] == 3
    for row in pair_rows(SECTION, ["circle", "square"]):
        assert shapeswap_path(layout, "ss", "circle-square", row).is_file()
    curves = json.loads((layout.curves("ss") / "circle-square.level3.json").read_text())
    assert [r["step"] for r in curves["curve"]] == [2, 3] and set(curves["curve"][0]) == {"step", "loss", "val_nll", "lr"}
    assert not any(layout.checkpoints("ss").iterdir())                            # cleaned at the end


def test_a_saved_row_loads_bit_exactly_and_shares_the_trained_level(layout):
    from ginn.experts.embedded import load_expert
    train_pair({**SECTION, "ablation_pairs": []}, layout, "ss", ["circle", "star"])
    cascade, f3 = (load_cascade(shapeswap_path(layout, "ss", "circle-star", r)) for r in ("cascade", "f3"))
    assert cascade.settings.levels == (3, 2) and f3.settings.levels == (3,)
    for k, v in f3.pairs["3"].state_dict().items():                  # the cascade's deepest level is the F3 row's
        assert torch.equal(v, cascade.pairs["3"].state_dict()[k])
    classifier = load_expert(layout.expert("world_classifier"))
    images = make_world(12, seed=5, n_captions=0).image
    again = load_cascade(shapeswap_path(layout, "ss", "circle-star", "cascade"))
    assert np.array_equal(cascade.translate(classifier, images), again.translate(classifier, images))
    rows = json.loads((layout.translators("ss") / "shapeswap.circle-star.rows.json").read_text())
    assert rows["cascade"]["units"] == ["level3", "level2_cond", "inverter_a2", "inverter_b2"]


def test_a_file_that_is_not_a_row_is_refused(tmp_path):
    from ginn.io import save_safetensors
    save_safetensors({"w": torch.zeros(1)}, tmp_path / "other.safetensors", {"format": "something else"})
    with pytest.raises(ValueError, match="not a saved shape-swap row"):
        load_cascade(tmp_path / "other.safetensors")
    with pytest.raises(FileNotFoundError, match="train_translator@shapeswap"):
        load_cascade(tmp_path / "missing.safetensors")
