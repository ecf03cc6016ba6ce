"""The paper-scale text→BigGAN pipeline (ginn.text2biggan, Sec. 4.1 and G.2 of Rombach et al.): its parameters,
its DVC file, and every stage end to end on tiny random experts of the real architectures, offline."""
import json
import time

import numpy as np
import pytest
import torch
import yaml
from helpers import REPO
from torch import nn

from ginn import text2biggan
from ginn.features import load_cache


# tiny models on 2 shared cores: one intra-op thread (the `one_thread` fixture of tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_thread")


def test_paper_profile_holds_the_released_settings():
    p = yaml.safe_load((REPO / "params.yaml").read_text())["paper"]
    rel = p["released"]["sbert_to_biggan256"]
    assert (rel["in_channels"], rel["n_flows"], rel["hidden_dim"], rel["hidden_depth"]) == (268, 24, 1024, 2)
    assert (rel["conditioning_dim"], rel["embedding_dim"], rel["batch_size"], rel["base_learning_rate"]) == \
        (768, 268, 16, 4.5e-6)
    assert p["released"]["faces32_to_faces256"]["n_flows"] == 20
    assert p["released"]["label_to_ae_unpaired"]["conditioning_dim"] == 3
    cfg = text2biggan.text2biggan_params(REPO / "params.yaml")
    t = cfg["translator"]
    assert (t["n_flows"], t["hidden_dim"], t["hidden_depth"], t["cond_dim"], t["embedding_dim"]) == (24, 1024, 2, 768, 268)
    assert cfg["train"]["batch_size"] == 16 and cfg["train"]["base_lr"] == 4.5e-6
    assert cfg["data"]["threshold"] == 2.5


def test_paper_dvc_pipeline_parses():
    stages = yaml.safe_load((REPO / "paper" / "dvc.yaml").read_text())["stages"]
    assert list(stages) == list(text2biggan.STAGES)
    for name, st in stages.items():
        assert f"ginn.text2biggan {name}" in st["cmd"] and "../ginn" in st["deps"]


def test_bad_params_name_the_key(tmp_path):
    bad = {"paper": {"text2biggan": {"biggan": {"model": "tiny"}}}}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(ValueError, match="needs the sections text, captioner"):
        text2biggan.text2biggan_params(tmp_path / "p.yaml")
    (tmp_path / "q.yaml").write_text("paper: {}\n")
    with pytest.raises(ValueError, match="paper: has no text2biggan section"):
        text2biggan.text2biggan_params(tmp_path / "q.yaml")
    assert text2biggan.main(["train", "--params", str(tmp_path / "q.yaml")]) == 2


def test_sample_latents_are_truncated_and_reproducible():
    z, c = text2biggan.sample_latents(2000, 16, threshold=2.5, classes=[3, 5], seed=0)
    assert z.shape == (2000, 16) and z.dtype == np.float32 and np.abs(z).max() <= 2.5
    assert 0.9 < z.std() < 1.0                                 # truncated, not rescaled
    assert set(np.unique(c)) == {3, 5}
    z2, c2 = text2biggan.sample_latents(2000, 16, threshold=2.5, classes=[3, 5], seed=0)
    assert np.array_equal(z, z2) and np.array_equal(c, c2)


# ------------------------------------------------------------------ end to end, tiny, through the real stages
class SmallFeatures(nn.Module):
    "A custom feature extractor for FID / IS: pooled colours → 12 features and 5 logits."

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.f = nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(12, 12))
        self.head = nn.Linear(12, 5)

    def forward(self, x):
        return self.f(x)

    def logits(self, x):
        return self.head(self.f(x))


def test_text_to_biggan_end_to_end(tmp_path, no_network):
    start = time.perf_counter()
    tiny = {"device": "cpu",
            "biggan": {"model": "tiny", "image_size": 32, "z_dim": 16, "num_classes": 10},
            "text": {"model": "minilm"},
            "captioner": {"model": "tiny", "max_length": 8, "batch_size": 64},
            "dequantizer": {"hidden": 32, "depth": 1, "epochs": 30, "batch_size": 10, "lr": 0.003},
            "data": {"splits": {"train": 256, "val": 64}, "seeds": {"train": 1, "val": 2}, "threshold": 2.5,
                     "classes": "all", "batch_size": 64},
            "translator": {"dim": 32, "n_flows": 4, "hidden_dim": 64, "hidden_depth": 1, "cond_dim": 384,
                           "embedding_dim": 16, "cond_hidden_dim": 32, "cond_depth": 1},
            "train": {"steps": 100, "batch_size": 32, "base_lr": 2e-5, "ckpt_every": 50},
            "sample": {"prompts": ["a dog on the grass", "a red car in the street"], "n": 3},
            "evaluate": {"n": 64, "features": "custom", "splits": 2}}
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"paper": {"text2biggan": tiny}}))
    root = tmp_path / "out"
    for stage in ("dequantizer", "data", "caption", "extract", "train", "sample"):
        assert text2biggan.main([stage, "--params", str(params), "--root", str(root), "--quiet"]) == 0
    # data: z_Θ = [z̃, ĥ] cached with a sidecar; z̃ truncated at 2.5; ĥ dequantised (not one of the 10 embeddings)
    zt = load_cache(root / "latents", "z_theta_train")
    assert zt.shape == (256, 32) and np.abs(zt.array[:, :16]).max() <= 2.5
    H = text2biggan.make_biggan(tiny["biggan"]).class_embeddings().numpy()
    classes = np.load(root / "latents" / "classes_train.npy")
    assert np.abs(zt.array[:, 16:] - H[classes]).max() > 1e-4
    # captions and z_Φ, paired row by row
    caps = text2biggan.load_captions(root / "captions", "captions_train", zt.array)
    assert len(caps) == 256 and all(isinstance(c, str) for c in caps)
    zp = load_cache(root / "z_phi", "z_phi_train")
    assert zp.shape == (256, 384) and np.isfinite(zp.array).all()
    # caching: a second caption run reuses the file
    cap_file = root / "captions" / "captions_train.json"
    before = cap_file.stat().st_mtime_ns
    text2biggan.main(["caption", "--params", str(params), "--root", str(root), "--quiet"])
    assert cap_file.stat().st_mtime_ns == before
    # training wrote τ, and its loss went down
    hist = json.loads((root / "translator" / "history.json").read_text())
    assert (root / "translator" / "tau.safetensors").is_file() and len(hist["val_nll"]) >= 2
    assert min(hist["val_nll"][1:]) < hist["val_nll"][0], hist["val_nll"]   # Eq. 4 on held-out pairs went down
    print("val NLL (nats):", [round(v, 2) for v in hist["val_nll"]])
    samples = np.load(root / "samples" / "samples.npy")
    assert samples.shape == (2, 3, 32, 32, 3) and samples.dtype == np.uint8 and samples.std() > 0
    assert (root / "samples" / "grid.png").is_file()
    m = text2biggan.stage_evaluate(tiny, root, feature_module=SmallFeatures())
    assert np.isfinite(m["nll"]["nats"]) if isinstance(m["nll"], dict) else np.isfinite(m["nll"])
    assert m["fid"] >= 0 and np.isfinite(m["fid"]) and 1.0 <= m["is_mean"] <= 5.0
    assert json.loads((root / "metrics" / "text2biggan.json").read_text())["fid"] == pytest.approx(m["fid"])
    print(f"\ntext→BigGAN end to end (tiny, CPU): {time.perf_counter() - start:.1f} s")
    assert not no_network
