"""ginn.experiment: scoring only what a condition names, the targets table and its verdicts, training histories."""
import json

import numpy as np
import pytest

from ginn.experiment import (TARGETS, Target, judge, load_prompts, named_accuracy, open_diversity, parse_prompts,
                             read_history)
from ginn.world import SLOTS, make_captions, make_world, named_attributes

HEADS = ["shape", "colour", "size", "scene", "position"]


def test_unnamed_attributes_are_ignored_by_the_scorer():
    "Fake oracle readings right on every named attribute and wrong on every unnamed one score 1 everywhere."
    world = make_world(400, seed=5)
    captions = [c[0] for c in world.captions] + [c[0] for c in make_captions(world, 1, split="paraphrase")]
    named = [named_attributes(c) for c in captions]
    truth = {h: np.concatenate([getattr(world, h)] * 2) for h in HEADS}
    wrong = {h: np.array([truth[h][i] if h in named[i] else (truth[h][i] + 1) % 3 for i in range(len(named))])
             for h in HEADS}
    acc = named_accuracy(wrong, named, HEADS)
    assert all(acc[f"acc_{h}"] == 1.0 for h in HEADS)
    assert 0 < acc["n_size"] < len(named) and 0 < acc["n_scene"] < len(named)   # some captions leave them open
    # scored against every true attribute, as before, the same readings fall below 1 where captions omit one
    naive = {h: float((wrong[h] == truth[h]).mean()) for h in HEADS}
    assert naive["size"] < 1 and naive["scene"] < 1
    # and a reading wrong on a named attribute is counted
    wrong["colour"] = (wrong["colour"] + 1) % 8
    assert named_accuracy(wrong, named, ["colour"])["acc_colour"] == 0.0


def test_open_diversity_is_zero_for_a_deterministic_sampler_and_positive_otherwise():
    rng = np.random.default_rng(0)
    named = [{"shape": 1}, {"shape": 2, "size": 0}, {}]
    coincide = {h: np.repeat(rng.integers(0, 3, (3, 1)), 6, axis=1) for h in ["shape", "size"]}
    vary = {h: rng.integers(0, 3, (3, 6)) for h in ["shape", "size"]}
    d0, d1 = open_diversity(coincide, named, ["shape", "size"]), open_diversity(vary, named, ["shape", "size"])
    assert d0["open_entropy"] == 0.0 and d0["open_classes"] == 1.0
    assert d1["open_entropy"] > 0 and d1["n_open"] == 3            # size open twice, shape once
    named_only = open_diversity(vary, [{"shape": 0, "size": 0}] * 3, ["shape", "size"])
    assert named_only["open_entropy"] is None and named_only["n_open"] == 0


def test_prompts_table_is_valid_and_human():
    prompts, named = load_prompts()
    assert len(prompts) >= 30 and len(set(prompts)) == len(prompts)
    assert sum(len(d) <= 3 for d in named) >= 10
    assert all(set(d) <= set(SLOTS) and {"colour", "shape"} & set(d) for d in named)
    with pytest.raises(ValueError, match="names no attribute"):
        parse_prompts("prompt\tshape\tcolour\tsize\tscene\tposition\nsomething\t\t\t\t\t\n")


def test_judge_marks_met_missed_and_missing():
    t = {"a": Target(">=", 0.9), "b": Target(">=", -2.0, "ref"), "c": Target(">", 0.0, "mlp", 5.0)}
    verdict = lambda claims: {r["claim"]: r["verdict"] for r in judge("x", claims, t)}
    assert verdict({"a": 0.95, "b": 21.0, "ref": 22.0, "c": 0.1, "mlp": 0.0}) == dict(a="met", b="met", c="met",
                                                                                        ref="", mlp="")
    assert verdict({"a": {"mean": 0.5, "std": 0.1, "n": 3}, "b": 10.0, "ref": 22.0, "c": 0.0, "mlp": 0.0}) == dict(
        a="missed", b="missed", c="missed", ref="", mlp="")
    assert verdict({})["a"] == "missed"
    assert TARGETS["text2img"]["acc_colour_caption_cinn"].value == 0.95


def test_read_history_checks_its_file(tmp_path):
    good = {"run": "a.cinn.seed0", "steps": 20, "best_step": 10, "stopped": "plateau", "final_gain": 0.0,
            "curve": [{"step": 10, "loss": 2.0, "val_nll": 1.5, "lr": 1e-3}, {"step": 20, "loss": 1.0, "val_nll": 1.6,
                                                                             "lr": 1e-3}]}
    (tmp_path / "a.json").write_text(json.dumps(good))
    h = read_history(tmp_path / "a.json")
    assert (h["best_step"], h["step"], h["val_nll"]) == (10, [10, 20], [1.5, 1.6])
    (tmp_path / "b.json").write_text(json.dumps({**good, "curve": [{"step": 10, "loss": 2.0}]}))
    with pytest.raises(ValueError, match="rows without exactly"):
        read_history(tmp_path / "b.json")
    (tmp_path / "c.json").write_text(json.dumps({**good, "stopped": None}))
    with pytest.raises(ValueError, match="stopped must be a reason"):
        read_history(tmp_path / "c.json")
