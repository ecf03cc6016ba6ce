"""The zero-pair runs (ginn.baselines.zeropair): the params section is checked, the label images round-trip, the
networks save and load bit-exactly, the n2n pseudo-pairs never read a (depth, labels) pair, and an interrupted
M&MNets run resumes at the stage it reached."""
import json

import numpy as np
import pytest
import torch

from ginn.baselines.zeropair import (LABEL_PALETTE, check_zeropair, load_network, modality_images, palette_labels,
                                     save_network, train_mmnets, zeropair_path, zeropair_runs)
from ginn.baselines.mixmatch import MixMatchNets
from ginn.config import Layout
from ginn.world import make_world, save_world

pytestmark = pytest.mark.usefixtures("one_thread")

SECTION = dict(split={"seed": 0, "rs_fraction": 0.5}, mixmatch={"widths": [8, 16], "steps": [3, 3, 2], "batch_size": 8},
               variants=["skip"], oracle_steps=4, n_val=16, log_every=2,
               n2n={"vae": {"latent_dim": 8, "width": 8, "epochs": 1, "batch_size": 16},
                    "train": {"steps": 4, "batch_size": 16, "val_every": 2}})


@pytest.mark.parametrize("change, message", [
    (dict(variants=["indices"]), "'skip' and/or 'none'"),
    (dict(mixmatch={"steps": [3, 3]}), "3 positive step counts"),
    (dict(mixmatch={"widht": [8]}), r"unknown setting\(s\) \['widht'\]"),
    (dict(oracle_steps=0), "oracle_steps: must be a positive integer"),
    (dict(split={"seed": 0, "rs_fraction": 1.0}), "strictly between 0 and 1"),
    (dict(n2n={"vae": {}}), "n2n: must be a mapping with exactly the keys vae, train"),
])
def test_bad_sections_name_the_key(change, message):
    check_zeropair(SECTION, "zp")
    with pytest.raises(ValueError, match=message):
        check_zeropair({**SECTION, **change}, "zp")


def test_runs_are_listed_longest_first_and_only_with_a_section():
    assert zeropair_runs({}) == []
    assert zeropair_runs({"zeropair": SECTION}) == ["mmnets.indices", "n2n", "mmnets.skip", "oracle"]


def test_label_images_round_trip_and_noise_snaps_to_the_nearest_colour():
    w = make_world(24, seed=4, n_captions=0)
    images = torch.as_tensor(modality_images(w, "labels")).permute(0, 3, 1, 2).float() / 255
    assert np.array_equal(palette_labels(images).numpy(), w.labels)
    noisy = (images + 0.2 * (torch.rand_like(images) - 0.5)).clamp(0, 1)     # every colour moved by < 0.1
    assert np.array_equal(palette_labels(noisy).numpy(), w.labels)
    assert len(np.unique(LABEL_PALETTE, axis=0)) == len(LABEL_PALETTE)


def test_saved_network_loads_bit_exactly_and_a_wrong_file_is_refused(tmp_path):
    nets = MixMatchNets((8, 16))
    with torch.no_grad():
        for m in nets.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_()        # the BatchNorm statistics travel with the weights
    path = save_network(nets, tmp_path / "n.safetensors", {"class": "MixMatchNets", **nets.config})
    back = load_network(path)
    x = torch.rand(2, 1, 32, 32)
    assert torch.equal(back.eval().translate(x, "depth", "labels"), nets.eval().translate(x, "depth", "labels"))
    from ginn.io import save_safetensors
    save_safetensors({"w": torch.zeros(1)}, tmp_path / "other.safetensors", {"format": "something else"})
    with pytest.raises(ValueError, match="not a saved zero-pair network"):
        load_network(tmp_path / "other.safetensors")


@pytest.fixture()
def layout(tmp_path):
    layout = Layout(tmp_path)
    for split, n, seed in (("train", 48, 0), ("val", 16, 1)):
        layout.data("world", split).parent.mkdir(parents=True, exist_ok=True)
        save_world(make_world(n, seed=seed, n_captions=0), layout.data("world", split))
    return layout


def test_an_interrupted_mmnets_run_resumes_at_its_last_finished_stage(layout, monkeypatch):
    import ginn.baselines.zeropair as zp_module
    calls = []
    real = zp_module.train_mixmatch

    def counting(nets, split, settings, stages, **kw):
        calls.append(stages)
        if stages == (2,) and len(calls) == 2:
            raise KeyboardInterrupt          # interrupted in stage 2
        return real(nets, split, settings, stages=stages, **kw)
    monkeypatch.setattr(zp_module, "train_mixmatch", counting)
    with pytest.raises(KeyboardInterrupt):
        train_mmnets(SECTION, layout, "zp", "indices", stages=(1, 2, 3), keep=(2, 3), device="cpu")
    summary = train_mmnets(SECTION, layout, "zp", "indices", stages=(1, 2, 3), keep=(2, 3), device="cpu")
    assert calls == [(1,), (2,), (2,), (3,)]            # stage 1 was not retrained
    assert summary["steps"] == 3 + 3 + 2
    curves = json.loads((layout.curves("zp") / "mmnets.indices.json").read_text())
    assert [r["step"] for r in curves["curve"]] == [2, 3, 5, 6, 8]   # steps run on across the stages
    assert zeropair_path(layout, "zp", "mmnets.indices", "stage3").is_file()
    assert not zeropair_path(layout, "zp", "mmnets.indices", "stage1").is_file()
    assert not any(layout.checkpoints("zp").iterdir())


def test_n2n_reads_labels_only_of_d_rs_and_depth_only_of_d_rd(layout, monkeypatch):
    import ginn.baselines.zeropair as zp_module
    from ginn.baselines.mixmatch import zero_pair_split
    from ginn.experts.embedded import train_world_vae
    from ginn.features import extract, feature_name
    from ginn.world import load_world
    train = load_world(layout.data("world", "train"))
    for split in ("train", "val"):
        w = load_world(layout.data("world", split))
        if split == "train":
            g = train_world_vae(w, latent_dim=8, width=8, epochs=1, progress=False)
        extract(g, w.image, layout.features("world", split), feature_name("world_vae"), progress=False)
    scene_of = {w.tobytes(): i for i, w in enumerate(train.image)}
    read = {"depth": set(), "labels": set()}
    real = zp_module.modality_images

    def recording(world, modality):
        read[modality] |= {scene_of.get(im.tobytes(), -1) for im in world.image}   # -1: a validation scene
        return real(world, modality)
    monkeypatch.setattr(zp_module, "modality_images", recording)
    tr = {"cinn": {"n_flows": 2, "hidden_dim": 8, "hidden_depth": 1, "embedding_dim": 4, "cond_hidden_dim": 8,
                   "cond_depth": 1}, "zeropair": SECTION}
    zp_module.train_n2n(SECTION, tr, layout, "zp", device="cpu")
    split = zero_pair_split(train, **SECTION["split"])
    assert read["labels"] - {-1} == set(split.rs_scenes.tolist())
    assert read["depth"] - {-1} == set(split.rd_scenes.tolist())
    assert not (read["labels"] & read["depth"]) - {-1}       # no training scene gives both


def test_a_run_does_not_depend_on_what_ran_before_in_its_process(layout):
    weights = []
    for state in (1, 2):                    # a worker process's global stream after different earlier jobs
        torch.manual_seed(state)
        train_mmnets(SECTION, layout, f"zp{state}", "skip", stages=(1, 2), keep=(2,), device="cpu")
        weights.append(load_network(zeropair_path(layout, f"zp{state}", "mmnets.skip", "stage2")).state_dict())
    assert all(torch.equal(a, b) for a, b in zip(weights[0].values(), weights[1].values()))
