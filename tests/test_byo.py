"""Bring your own experts (issue 17): the generic adapters of `ginn.experts.adapters`, and experts and a data set
declared in a params file flowing through the extract, train-translator and evaluate stages."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers import REPO
from torch import nn

from ginn.experts.adapters import (OUTPUT, FunctionExpert, ModuleExpert, layer_names, transformers_expert,
                                   weights_hash)
from ginn.experts.adapters import DECLARED
from ginn.experts.embedded import ROLES, to_input
from ginn.features import cache_is_current, extract, load_cache


@pytest.fixture(autouse=True)
def _restore_roles():
    "Declaring experts registers roles in this process (`declare_custom`): every test leaves the table as it was."
    roles, declared = dict(ROLES), dict(DECLARED)
    yield
    ROLES.clear(), ROLES.update(roles), DECLARED.clear(), DECLARED.update(declared)


def small_cnn(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(),
                         nn.Sequential(nn.Conv2d(4, 8, 3, stride=2, padding=1), nn.ReLU()),
                         nn.Flatten(), nn.Linear(8 * 4 * 4, 5))


IMAGES = np.random.default_rng(0).integers(0, 256, (7, 8, 8), dtype=np.uint8)


def test_a_hook_tap_is_exactly_what_the_layer_computes():
    cnn = small_cnn()
    expert = ModuleExpert(cnn, taps=["2.0", "2", OUTPUT], example=IMAGES[:2])
    x = to_input(IMAGES)
    chunked = ModuleExpert(cnn, taps="2", example=IMAGES[:2], batch_size=3)     # 3 + 3 + 1 rows
    assert torch.allclose(chunked.encode(IMAGES), cnn[:3](x), atol=1e-6)
    assert torch.equal(expert.encode(IMAGES, "2.0"), cnn[2][0](cnn[1](cnn[0](x))))
    assert torch.equal(expert.encode(IMAGES, "2"), cnn[:3](x))
    assert torch.equal(expert.encode(IMAGES, OUTPUT), cnn(x))
    assert expert.output_shape("2") == (8, 4, 4) and expert.output_shape(OUTPUT) == (5,)
    assert not cnn.training and not any(p.requires_grad for p in cnn.parameters())
    cnn.train()                                   # the wrapper, frozen, ignores train()
    expert.train()
    assert not expert.training
    pooled = ModuleExpert(cnn, taps="2", example=IMAGES[:2], pool="mean")
    assert torch.allclose(pooled.encode(IMAGES), cnn[:3](x).mean((2, 3)))
    flat = ModuleExpert(cnn, taps="2", example=IMAGES[:2], pool="flatten")
    assert flat.output_shape() == (128,)


def test_a_bad_tap_lists_the_layers():
    cnn = small_cnn()
    with pytest.raises(ValueError) as e:
        ModuleExpert(cnn, taps="layer3", example=IMAGES[:2])
    for name in layer_names(cnn):
        assert repr(name) in str(e.value) or f" {name}," in str(e.value) or str(e.value).find(name) >= 0
    assert "'layer3'" in str(e.value) and "2.0" in str(e.value)


def test_a_function_expert_and_its_shape():
    fn = FunctionExpert(lambda b: np.asarray(b, np.float32).reshape(len(b), -1).mean(1, keepdims=True),
                        example=IMAGES[:2], name="brightness", version="1")
    out = fn.encode(IMAGES)
    assert out.shape == (7, 1) and fn.output_shape() == (1,)
    assert np.allclose(out.numpy()[:, 0], IMAGES.reshape(7, -1).mean(1))


def test_changing_the_weights_invalidates_the_cache(tmp_path):
    cnn = small_cnn()
    expert = ModuleExpert(cnn, taps=OUTPUT, example=IMAGES[:2], name="cnn")
    sidecar = json.loads(extract(expert, IMAGES, tmp_path, "cnn-output", tap=OUTPUT, progress=False).read_text())
    assert sidecar["adapter"]["adapter"] == "ModuleExpert"
    assert sidecar["adapter"]["weights_sha256"] == weights_hash(cnn)
    assert cache_is_current(tmp_path, "cnn-output", expert, IMAGES, OUTPUT)
    assert not cache_is_current(tmp_path, "cnn-output", expert, IMAGES[:-1], OUTPUT)     # other inputs
    with torch.no_grad():
        cnn[0].weight[0, 0, 0, 0] += 1e-3
    assert not cache_is_current(tmp_path, "cnn-output", expert, IMAGES, OUTPUT)
    extract(expert, IMAGES, tmp_path, "cnn-output", tap=OUTPUT, progress=False)
    assert cache_is_current(tmp_path, "cnn-output", expert, IMAGES, OUTPUT)
    assert np.array_equal(load_cache(tmp_path, "cnn-output").array, cnn(to_input(IMAGES)).numpy())


def test_transformers_text_model_offline(tmp_path, no_network):
    from transformers import BertConfig, BertModel
    from ginn.experts.embedded import minilm_path
    for f in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(minilm_path() / f, tmp_path / f)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64)
    BertModel(config).save_pretrained(tmp_path)
    expert = transformers_expert(tmp_path, kind="text", taps=[OUTPUT, "encoder.layer.0"])
    texts = ["a red circle on grass", "two", "the night sky above the sand"]
    out, layer0 = expert.encode(texts), expert.encode(texts, "encoder.layer.0")
    assert out.shape == (3, 16) and layer0.shape == (3, 16)
    from transformers import AutoModel, AutoTokenizer
    model, tok = AutoModel.from_pretrained(tmp_path).eval(), AutoTokenizer.from_pretrained(tmp_path)
    t = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        o = model(**t, output_hidden_states=True)
    m = t["attention_mask"][..., None].float()
    assert torch.allclose(out, (o.last_hidden_state * m).sum(1) / m.sum(1), atol=1e-5)
    assert torch.allclose(layer0, (o.hidden_states[1] * m).sum(1) / m.sum(1), atol=1e-5)
    assert no_network == []


def test_transformers_vision_model_offline(tmp_path, no_network):
    from transformers import ViTConfig, ViTModel
    torch.manual_seed(0)
    config = ViTConfig(image_size=8, patch_size=4, num_channels=1, hidden_size=16, num_hidden_layers=1,
                       num_attention_heads=2, intermediate_size=32)
    ViTModel(config, add_pooling_layer=False).save_pretrained(tmp_path)
    expert = transformers_expert(tmp_path, kind="vision")
    out = expert.encode(IMAGES)
    with torch.no_grad():
        ref = expert.module(pixel_values=to_input(IMAGES)).last_hidden_state[:, 0]
    assert out.shape == (7, 16) and torch.allclose(out, ref)
    assert no_network == []


# ---------------------------------------------------------------- declared in a params file
def byo_params(ae_seed: int = 0) -> dict:
    "A smoke profile of one experiment, `byo`, between two experts declared by import path on sklearn's digits."
    cinn = {"n_flows": 2, "hidden_dim": 32, "hidden_depth": 1, "embedding_dim": 16, "cond_hidden_dim": 32,
            "cond_depth": 1}
    mlp = {"hidden_dim": 32, "depth": 2, "embedding_dim": 16, "cond_hidden_dim": 32, "cond_depth": 1}
    train = {"steps": 12, "batch_size": 32, "lr": 0.002, "warmup": 2, "val_every": 4, "patience": 2, "ckpt_every": 10}
    return {"profile": "smoke", "experiments": ["byo"], "smoke": {
        "device": "cpu", "workers": 1, "threads": 1,
        "world": {"splits": {"train": 10, "val": 10, "test": 10}, "seeds": {"train": 0, "val": 1, "test": 2},
                  "size": 32, "max_objects": 1, "n_captions": 1},
        "experts": {"roles": []},
        "custom": {
            "datasets": {"digits": {"loader": "ginn.experts.adapters:digits_split"}},
            "experts": {
                "clf": {"factory": "ginn.experts.adapters:digits_classifier", "kwargs": {"steps": 20},
                        "dataset": "digits", "taps": ["pool1", "logits"]},
                "ae": {"factory": "ginn.experts.adapters:digits_autoencoder", "kwargs": {"steps": 20, "seed": ae_seed},
                       "dataset": "digits", "taps": ["encoder"], "decoder": "decode"}}},
        "extract": {"batch_size": 256, "digits": ["ae:encoder", "clf:pool1", "clf:logits"]},
        "byo": {"translator": {"dataset": "digits", "target": "ae:encoder", "conditions": ["clf:pool1", "clf:logits"],
                               "models": ["cinn", "mlp"], "marginal": True, "seeds": [0], "cinn": cinn, "mlp": mlp,
                               "train": train},
                "evaluate": {"n_show": 2, "n_samples": 3, "temperature": 1.0, "seed": 0}}}}


def test_a_declared_expert_flows_through_extract_train_evaluate(tmp_path):
    from ginn.pipeline import main
    (tmp_path / "nbs" / "experiments").mkdir(parents=True)
    shutil.copy(REPO / "nbs" / "experiments" / "byo.ipynb", tmp_path / "nbs" / "experiments" / "byo.ipynb")
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(byo_params()))
    cli = lambda *a: main([*a, "--params", str(params), "--quiet"])
    assert cli("extract") == 0
    features = tmp_path / "features" / "digits"
    sidecars = {f.name: f.read_text() for f in sorted((features / "test").glob("*.json"))}
    assert set(sidecars) == {"ae-encoder.json", "clf-pool1.json", "clf-logits.json"}
    meta = json.loads(sidecars["clf-pool1.json"])
    assert meta["shape"] == [16, 4, 4] and meta["adapter"]["adapter"] == "ModuleExpert"
    assert json.loads(sidecars["ae-encoder.json"])["shape"] == [16]
    assert cli("train-translator", "byo") == 0
    runs = json.loads((tmp_path / "models" / "translators" / "byo" / "training.json").read_text())["runs"]
    assert len(runs) == 5                                     # 2 conditions x (cinn, mlp) + the marginal flow
    assert cli("evaluate", "byo") == 0
    metrics = json.loads((tmp_path / "metrics" / "byo.json").read_text())
    assert metrics["profile"] == "smoke" and metrics["target_has_decoder"] is True
    assert set(metrics["layers"]) == {"clf:pool1", "clf:logits"}
    assert np.isfinite(metrics["layers"]["clf:logits"]["cinn"]["mi"]["mean"])
    assert (tmp_path / "reports" / "figures" / "byo" / "samples.png").is_file()
    assert "| model |" in (tmp_path / "reports" / "byo.ipynb").read_text()
    # a rerun re-extracts nothing; a changed model (another seed of the autoencoder) re-extracts its features only
    stamps = lambda: {str(f): f.stat().st_mtime_ns for f in sorted(features.rglob("*.npy"))}
    before = stamps()
    assert len(before) == 9 and cli("extract") == 0
    assert stamps() == before
    assert {f.name: f.read_text() for f in sorted((features / "test").glob("*.json"))} == sidecars
    params.write_text(yaml.safe_dump(byo_params(ae_seed=1)))
    assert cli("extract") == 0
    after = {f.name: f.read_text() for f in sorted((features / "test").glob("*.json"))}
    assert after["clf-pool1.json"] == sidecars["clf-pool1.json"]
    changed = [f for f, t in stamps().items() if t != before[f]]
    assert sorted(Path(f).name for f in changed) == ["ae-encoder.npy"] * 3   # train, val, test
    assert (json.loads(after["ae-encoder.json"])["adapter"]["weights_sha256"]
            != json.loads(sidecars["ae-encoder.json"])["adapter"]["weights_sha256"])


def test_bad_declarations_name_the_key(tmp_path):
    from ginn.config import load_params
    p = byo_params()
    p["smoke"]["custom"]["experts"]["clf"]["dataset"] = "nope"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p))
    with pytest.raises(ValueError, match="custom.experts.clf.dataset"):
        load_params(tmp_path / "params.yaml")
    p = byo_params()
    p["smoke"]["custom"]["experts"]["world_vae"] = p["smoke"]["custom"]["experts"].pop("clf")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p))
    with pytest.raises(ValueError, match="embedded expert"):
        load_params(tmp_path / "params.yaml")


def test_the_recipe_is_a_page_of_the_site(tmp_path):
    import importlib.util
    spec = importlib.util.spec_from_file_location("docs_build", REPO / "docs" / "build.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    build.stage(REPO, tmp_path)
    page = json.loads((tmp_path / "tutorials" / "tutorial_byo.ipynb").read_text())
    outputs = [o for c in page["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 2        # samples and recombination, stored
    assert any("I(z_Φ; z_Θ)" in "".join(o.get("text", "")) for o in outputs)  # the diagnosis numbers, printed
    assert "tutorials/tutorial_byo" in (tmp_path / "index.ipynb").read_text()


def test_a_target_without_decoder_trained_side_by_side(tmp_path):
    "Any target shape: the classifier's logits as z_Θ (no decoder: numbers, no figure), runs in two worker processes."
    from ginn.pipeline import main
    (tmp_path / "nbs" / "experiments").mkdir(parents=True)
    shutil.copy(REPO / "nbs" / "experiments" / "byo.ipynb", tmp_path / "nbs" / "experiments" / "byo.ipynb")
    p = byo_params()
    p["smoke"]["workers"] = 2                     # the spawned workers must know the declared experts
    p["smoke"]["extract"]["digits"] = ["ae:encoder", "clf:logits"]
    p["smoke"]["byo"]["translator"].update(target="clf:logits", conditions=["ae:encoder"], marginal=False)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(p))
    for stage in (["extract"], ["train-translator", "byo"], ["evaluate", "byo"]):
        assert main([*stage, "--params", str(params), "--quiet"]) == 0, stage
    metrics = json.loads((tmp_path / "metrics" / "byo.json").read_text())
    assert metrics["target_has_decoder"] is False and metrics["h_z_theta"] is None
    assert np.isfinite(metrics["layers"]["ae:encoder"]["cinn"]["nats"]["mean"])
    assert not (tmp_path / "reports" / "figures" / "byo" / "samples.png").exists()


def test_a_folder_data_set_reads_arrays_texts_and_images(tmp_path):
    from PIL import Image
    from ginn.experts.adapters import load_custom_split
    folder = tmp_path / "data" / "raw" / "mine"
    (folder / "test").mkdir(parents=True)
    np.save(folder / "train.npy", IMAGES)
    np.savez(folder / "val.npz", x=IMAGES[:3], y=np.arange(3))
    for i, im in enumerate(IMAGES[:4]):
        Image.fromarray(im).save(folder / "test" / f"{i:03d}.png")
    spec = {"folder": "data/raw/mine"}
    assert np.array_equal(load_custom_split(spec, "train", tmp_path), IMAGES)
    assert np.array_equal(load_custom_split(spec, "val", tmp_path), IMAGES[:3])
    assert np.array_equal(load_custom_split(spec, "test", tmp_path), IMAGES[:4])
    (folder / "test.txt").write_text("one\ntwo\n")
    assert load_custom_split(spec, "test", tmp_path) == ["one", "two"]
    with pytest.raises(FileNotFoundError, match="no nope.npy"):
        load_custom_split(spec, "nope", tmp_path)
