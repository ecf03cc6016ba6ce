"""The pipeline's stages (ginn.pipeline, ginn.runs) and configuration (ginn.config): parameter checks with clear
messages, stage outputs, interruption safety."""
import copy
import json
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from helpers import REPO, TINY, TRANSLATOR

from ginn.config import PROFILES, Layout, check_params, load_params
from ginn.experts.embedded import ConvVAE, save_expert
from ginn.features import DataFeature, extract, feature_name, hash_inputs, load_cache, parse_feature
from ginn.pipeline import feature_expert, feature_inputs, main, prepare, stage_extract, stage_train_experts, \
    stage_train_translator
from ginn.runs import pair_caches
from ginn.translator import load_translator
from ginn.world import SCENES, attributes_vector, derived_input, make_world, save_world

def with_experiment(params, name="toy", translator=None):
    params = copy.deepcopy(params)
    params["experiments"] = [name]
    params[name] = {"translator": copy.deepcopy(translator or TRANSLATOR), "evaluate": {}}
    return params


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    "A tiny layout with data, two experts and their feature caches."
    layout = Layout(tmp_path_factory.mktemp("pipeline"))
    prepare(TINY, layout, progress=False)
    stage_train_experts(TINY, layout, progress=False)
    stage_extract(TINY, layout, progress=False)
    return layout


def repo_params(profile="default"):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    return {**raw[profile], "profile": profile, "experiments": raw["experiments"], "device": "cpu"}


# ---------------------------------------------------------------------------------------------- parameters

def test_data_features_extract_like_experts(tmp_path):
    "The untrained features (captions through MiniLM, attribute / domain / class vectors) cache like any expert's."
    world = make_world(12, seed=3, n_captions=2)
    save_world(world, Layout(tmp_path).data("world", "test"))
    layout = Layout(tmp_path)
    params = {"extract": {"batch_size": 5, "world": ["attributes:vector", "domain:night", "minilm:paraphrase",
                                                     "world_vae@deformed"]}}
    save_expert(ConvVAE(size=32, latent_dim=4, width=4).freeze(), layout.expert("world_vae"))
    for spec in params["extract"]["world"]:
        role, tap = parse_feature(spec)
        inputs = feature_inputs(spec, "world", layout, "test")
        expert = feature_expert(role, tap, layout, inputs)
        extract(expert, inputs, layout.features("world", "test"), feature_name(spec),
                tap=None if role == "minilm" else tap, batch_size=5, progress=False)
    vec = load_cache(layout.features("world", "test"), "attributes-vector")
    np.testing.assert_array_equal(vec.array, attributes_vector(world))
    dom = load_cache(layout.features("world", "test"), "domain-night").array
    np.testing.assert_array_equal(dom.argmax(1), world.scene == SCENES.index("night"))
    assert dom.sum(1).tolist() == [1.0] * 12
    text = load_cache(layout.features("world", "test"), "minilm-paraphrase").array
    assert text.shape == (12, 384) and np.allclose(np.linalg.norm(text, axis=1), 1, atol=1e-4)
    deformed = load_cache(layout.features("world", "test"), "world_vae-z-deformed")
    assert deformed.stochastic and deformed.meta["source_sha256"] == hash_inputs(derived_input(world, "deformed"))
    with pytest.raises(ValueError, match="expected vectors of shape"):
        DataFeature("attributes", "vector", 25).encode(np.zeros((2, 3), np.float32))


@pytest.mark.parametrize("profile", PROFILES)
def test_repo_profiles_are_valid(profile):
    "The repository's own profiles, `paper` included, pass `check_params` (CI runs only the smoke pipeline)."
    params = load_params(REPO / "params.yaml", profile=profile)
    assert params["profile"] == profile and params["experiments"]
    if profile == "paper":
        assert params["text2biggan"]["translator"]["n_flows"] == 24
        return
    for name in params["experiments"]:
        assert (REPO / "nbs" / "experiments" / f"{name}.ipynb").is_file()
        assert params[name]["translator"]["cinn"]["n_flows"] >= 1


def test_shared_settings_are_merged_not_shared_objects():
    "YAML anchors state shared settings once; every experiment still gets its own, fully expanded section."
    params = load_params(REPO / "params.yaml", profile="default")
    text2img, superres = params["text2img"]["translator"], params["superres"]["translator"]
    assert text2img["cinn"] == superres["cinn"] and text2img["train"]["steps"] != superres["train"]["steps"]
    assert params["unpaired"]["translator"]["cinn"]["cond_hidden_dim"] != superres["cinn"]["cond_hidden_dim"]
    assert "shared" not in params


def test_the_paper_profile_is_refused_by_the_root_pipeline(tmp_path, capsys):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({**raw, "profile": "paper"}))
    assert main(["prepare", "--params", str(tmp_path / "params.yaml")]) == 2
    assert "dvc repro paper/dvc.yaml" in capsys.readouterr().err


def test_unknown_profile_is_refused(tmp_path):
    (tmp_path / "params.yaml").write_text("profile: huge\nsmoke: {}\n")
    with pytest.raises(ValueError, match="unknown or undefined profile 'huge'.*defined profiles are smoke"):
        load_params(tmp_path / "params.yaml")
    with pytest.raises(FileNotFoundError, match="no parameter file"):
        load_params(tmp_path / "missing.yaml")


def break_params(mutate):
    params = repo_params("smoke")
    mutate(params)
    return params


@pytest.mark.parametrize("mutate, message", [
    (lambda p: p.update(experiments=["diagnosis", "txt2img"]), "unknown experiment 'txt2img'.*experiments it defines are diagnosis"),
    (lambda p: p["experts"]["roles"].append("bigvae"), r"unknown expert\(s\) \['bigvae'\]"),
    (lambda p: p["extract"]["world"].append("world_clasifier:last"), "unknown expert 'world_clasifier'"),
    (lambda p: p["extract"]["world"].append("world_classifier:deep"), "has no tap 'deep'.*its taps are last, early"),
    (lambda p: p["diagnosis"]["translator"].update(target="world_segmenter:argmax"),
     "is not extracted: add it to extract.world"),
    (lambda p: p["world"]["splits"].update(train=0), r"world.splits.train: must be a positive integer, got 0"),
    (lambda p: p["world"].update(size=-32), r"world.size: must be a positive integer, got -32"),
    (lambda p: p["world"]["seeds"].update(val=0), "the splits need different seeds"),
    (lambda p: p["experts"]["world_vae"].update(epochs=0), r"experts.world_vae.epochs: must be a positive integer"),
    (lambda p: p["diagnosis"]["translator"]["train"].update(steps=-5), r"train.steps: must be a positive integer"),
    (lambda p: p["diagnosis"]["translator"]["train"].update(precision="fp16"),
     r"train.precision: must be one of \('fp32', 'bf16'\)"),
    (lambda p: p["diagnosis"]["translator"]["train"].update(anneal=1.5), r"train.anneal: must lie strictly between 0 and 1"),
    (lambda p: p["diagnosis"]["translator"].update(models=["gan"]), "models: must list some of cinn, mlp"),
    (lambda p: p["extract"].update(mnist=["world_vae"]), "expert 'world_vae' reads 'world', not 'mnist'"),
    (lambda p: p["colourize"]["translator"]["pixel"].update(task="sketch"), r"pixel.task: must be one of colourize, daynight"),
    (lambda p: p["colourize"]["translator"]["pixel"]["train"].update(epochs=3), r"pixel.train: unknown key\(s\) \['epochs'\]"),
    (lambda p: p["colourize"]["translator"]["pixel"].pop("seeds"), "pixel: must be a mapping with exactly the keys"),
    (lambda p: p["colourize"]["translator"]["pixel"].update(models={}), "pixel.models: must map run names"),
    (lambda p: p["colourize"]["translator"]["pixel"]["models"]["pixel_cinn"].update(train={"epochs": 3}),
     r"pixel.models.pixel_cinn.train: unknown key\(s\) \['epochs'\]"),
    (lambda p: p["colourize"]["translator"]["pixel"]["models"]["pixel_cinn"].update(train={"noise": "off"}),
     r"pixel.models.pixel_cinn.train.noise: must be true or false, got 'off'"),
    (lambda p: p["colourize"]["translator"]["pixel"]["models"]["pixel_cinn"].update(train={"steps": 0}),
     r"pixel.models.pixel_cinn.train.steps: must be a positive integer"),
    (lambda p: p["diagnosis"]["translator"].update(conditions=[]), "only an experiment whose runs are all in a baseline section, one of zeropair"),
    (lambda p: p["zeropair"]["translator"]["zeropair"].update(variants=["indices"]), "zeropair.variants: lists side"),
    (lambda p: p["zeropair"]["translator"]["zeropair"].pop("n2n"), "zeropair: must be a mapping with exactly the keys"),
    (lambda p: p["shapeswap"]["translator"]["shapeswap"].update(ablations=["no_gp"]), "shapeswap.ablations: lists loss"),
    (lambda p: p["shapeswap"]["translator"]["shapeswap"].pop("n2n"), "shapeswap: must be a mapping with exactly the keys"),
])
def test_bad_params_name_the_key_and_the_fix(mutate, message):
    with pytest.raises(ValueError, match=message):
        check_params(break_params(mutate), REPO)


def test_command_line_reports_bad_params_without_traceback(tmp_path, capsys):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["profile"], raw["experiments"] = "smoke", ["nosuch"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    assert main(["prepare", "--params", str(tmp_path / "params.yaml")]) == 2
    err = capsys.readouterr().err
    assert "ginn prepare: error:" in err and "unknown experiment 'nosuch'" in err and "Traceback" not in err


# ---------------------------------------------------------------------------------------------- stages

def test_stages_write_their_outputs(prepared):
    layout = prepared
    for split in ("train", "val", "test"):
        assert layout.data("world", split).is_file() and layout.data("mnist", split).is_file()
    quality = json.loads(layout.metrics("experts").read_text())
    assert set(quality) == {"world_vae", "world_classifier"} and "psnr" in quality["world_vae"]
    target, cond = pair_caches(TRANSLATOR, layout, "world_classifier:last", "train")
    assert len(target) == len(cond) == 96 and target.stochastic and not cond.stochastic


def test_missing_cache_says_run_extract(prepared, tmp_path):
    params = with_experiment(TINY)
    with pytest.raises(FileNotFoundError, match="Run the extract stage"):
        stage_train_translator(params, Layout(tmp_path), "toy", progress=False)


def test_unknown_experiment_at_stage_level(prepared):
    with pytest.raises(ValueError, match="unknown experiment 'nope'"):
        stage_train_translator(with_experiment(TINY), prepared, "nope", progress=False)


def test_sidecar_disagreeing_with_its_array_is_refused(prepared, tmp_path):
    layout = Layout(tmp_path)
    src, dst = prepared.features("world", "train"), layout.features("world", "train")
    dst.mkdir(parents=True)
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    sidecar = dst / "world_classifier-last.json"
    meta = json.loads(sidecar.read_text())
    meta["shape"] = [meta["shape"][0] + 1]
    sidecar.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="records shape .* but the array has shape"):
        pair_caches(TRANSLATOR, layout, "world_classifier:last", "train")


def test_pair_of_different_lengths_is_refused(prepared, tmp_path):
    layout = Layout(tmp_path)
    dst = layout.features("world", "train")
    dst.mkdir(parents=True)
    for f in prepared.features("world", "train").iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    for f in prepared.features("world", "val").glob("world_classifier-last.*"):  # 32 rows next to 96
        (dst / f.name).write_bytes(f.read_bytes())
    with pytest.raises(ValueError, match="cannot pair feature caches of different lengths"):
        pair_caches(TRANSLATOR, layout, "world_classifier:last", "train")


def test_translator_stage_trains_every_run_and_spatial_conditions(prepared):
    tr = {**TRANSLATOR, "conditions": ["world_classifier:last", "world_classifier:early"],
          "models": ["cinn", "mlp"], "marginal": True, "seeds": [0, 1], "train": {"steps": 3, "batch_size": 16}}
    summary = stage_train_translator(with_experiment(TINY, "grid", tr), prepared, "grid", progress=False)
    assert len(summary["runs"]) == 2 * 2 * 2 + 2
    out = prepared.translators("grid")
    spatial = load_translator(out / "world_classifier-early.cinn.seed1.safetensors")
    assert spatial.cond_shape == (16, 8, 8)
    assert type(load_translator(out / "world_classifier-early.mlp.seed0.safetensors")).__name__ == "MLPTranslator"
    assert not prepared.checkpoints("grid").exists()          # every run finished: no checkpoint is left


def write_params(layout: Layout, params: dict):
    raw = {"profile": "smoke", "experiments": params["experiments"], "smoke": params}
    (layout.root / "params.yaml").write_text(yaml.safe_dump(raw))
    (layout.root / "nbs" / "experiments").mkdir(parents=True, exist_ok=True)
    for name in params["experiments"]:
        (layout.root / "nbs" / "experiments" / f"{name}.ipynb").write_text("{}")


# The interrupted command saves its first checkpoint, says so, and then waits to be interrupted: the SIGINT always
# lands mid-run, whatever the machine's speed (racing a running job against the clock made this test flaky). It
# restores Python's Ctrl-C handler first: a suite started in the background (`pytest ... &`) inherits an ignored
# SIGINT, and Python then installs no KeyboardInterrupt, so the child slept through the signal.
WAIT_AFTER_FIRST_CHECKPOINT = """
import signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)
import ginn.train
from ginn.pipeline import main
save = ginn.train.save_checkpoint
def save_then_wait(*args, **kwargs):
    save(*args, **kwargs)
    print("checkpointed", flush=True)
    time.sleep(600)
ginn.train.save_checkpoint = save_then_wait
sys.exit(main(sys.argv[1:]))
"""


def test_ctrl_c_leaves_no_finished_output_and_the_rerun_resumes(prepared):
    """SIGINT during `ginn train-translator` leaves no model and no training.json, only a checkpoint; the next run
    resumes from it."""
    tr = {**TRANSLATOR, "train": {"steps": 12, "batch_size": 16, "ckpt_every": 3}}
    params = with_experiment(TINY, "intr", tr)
    write_params(prepared, params)
    cmd = [sys.executable, "-c", WAIT_AFTER_FIRST_CHECKPOINT, "train-translator", "intr",
           "--params", str(prepared.root / "params.yaml"), "--quiet"]
    proc = subprocess.Popen(cmd, cwd=prepared.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "checkpointed", proc.stderr.read()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "KeyboardInterrupt" in err
    out, ckpt_dir = prepared.translators("intr"), prepared.checkpoints("intr")
    assert not (out / "training.json").exists()
    assert not list(out.glob("*.safetensors")), "an interrupted run left a model that looks finished"
    assert list(ckpt_dir.glob("*/checkpoint.safetensors"))
    summary = stage_train_translator(load_params(prepared.root / "params.yaml"), prepared, "intr", progress=False)
    assert "resumed" not in summary["runs"][0]       # a fact of this session, not of the output (RUN_VOLATILE)
    assert (out / "world_classifier-last.cinn.seed0.safetensors").is_file()
    assert not ckpt_dir.exists()


def test_parallel_workers_train_the_same_runs_as_one_process(prepared):
    "`workers: 2` trains the runs in two one-thread processes; each run's result matches a run trained alone."
    tr = {**TRANSLATOR, "conditions": ["world_classifier:last"], "models": ["cinn", "mlp"], "marginal": False,
          "seeds": [0, 1], "train": {"steps": 4, "batch_size": 16}}
    parallel = stage_train_translator({**with_experiment(TINY, "par", tr), "workers": 2}, prepared, "par",
                                      progress=False)
    assert [(r["condition"], r["kind"], r["seed"]) for r in parallel["runs"]] == [
        ("world_classifier:last", k, s) for s in (0, 1) for k in ("cinn", "mlp")]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        alone = stage_train_translator(with_experiment(TINY, "one", tr), prepared, "one", progress=False)
    finally:
        torch.set_num_threads(threads)
    for p, a in zip(parallel["runs"], alone["runs"]):
        assert p["final_loss"] == pytest.approx(a["final_loss"], rel=1e-5)
