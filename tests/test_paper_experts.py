"""Paper-scale adapters (ginn.experts.paper), offline on tiny configurations."""
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from ginn.experts.paper import (BigGANExpert, Captioner, DequantizationVAE, INCEPTION_URL, InceptionFeatures,
                                MissingWeightsError, SentenceEncoder, TorchvisionClassifier, TorchvisionSegmenter,
                                image_scores, inception_score, inception_weights, pool_tokens, small_biggan_config,
                                tiny_captioner, train_dequantizer)
from ginn.experts.embedded import TextExpert, minilm_path

ROOT = Path(__file__).resolve().parents[1]


# tiny models on 2 shared cores: one intra-op thread (the `one_thread` fixture of tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_thread")


# `no_network` (every socket use recorded and refused) is a fixture of tests/conftest.py.


@pytest.fixture(scope="module")
def biggan():
    return BigGANExpert.from_config(small_biggan_config(32, z_dim=16, num_classes=10), seed=0)


@pytest.fixture(scope="module")
def tiny_bert():
    from transformers import AutoTokenizer, BertConfig, BertModel
    tok = AutoTokenizer.from_pretrained(str(minilm_path()), local_files_only=True)
    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                 intermediate_size=37, max_position_embeddings=64))
    return SentenceEncoder(model, tok, name="tiny_bert", pooling="mean", max_length=32)


# ------------------------------------------------------------------ text
def test_minilm_adapter_matches_sentence_transformers(no_network):
    enc = SentenceEncoder.from_pretrained(minilm_path(), name="minilm")
    assert (enc.pooling, enc.normalize) == ("mean", True)          # as the model card (modules.json) says
    s = ["a small dog runs on the beach", "a puppy running along the sand", "a plate of pasta"]
    e = enc.encode(s)
    assert e.shape == (3, 384) and torch.isfinite(e).all()
    torch.testing.assert_close(e, TextExpert().encode(s), atol=1e-4, rtol=1e-4)
    assert e[0] @ e[1] > e[0] @ e[2] + 0.2
    cls = enc.encode(s, "cls")
    assert cls.shape == (3, 384) and (cls - e).abs().max() > 1e-2   # the taps differ
    assert not no_network


def test_tiny_bert_adapter_pools_mean_over_real_tokens(tiny_bert, no_network):
    assert tiny_bert.output_shape() == (32,) and tiny_bert.taps == ("embedding", "cls")
    texts = ["a cat", "a much longer sentence about a cat sitting on a red mat"]
    e = tiny_bert.encode(texts)
    assert e.shape == (2, 32) and torch.isfinite(e).all()
    # padding does not change a sentence's embedding: alone or batched with a longer one
    torch.testing.assert_close(tiny_bert.encode(texts[:1]), e[:1], atol=1e-5, rtol=1e-4)
    assert (tiny_bert.encode(texts, "cls") - e).abs().max() > 1e-3
    assert not any(p.requires_grad for p in tiny_bert.parameters()) and not tiny_bert.model.training
    assert not no_network


def test_pooling_ignores_padding():
    h = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    m = torch.tensor([[1, 1, 0]])
    torch.testing.assert_close(pool_tokens(h, m, "mean"), torch.tensor([[2.0, 3.0]]))
    torch.testing.assert_close(pool_tokens(h, m, "max"), torch.tensor([[3.0, 4.0]]))
    torch.testing.assert_close(pool_tokens(h, m, "cls"), torch.tensor([[1.0, 2.0]]))
    with pytest.raises(ValueError, match="pooling must be one of"):
        pool_tokens(h, m, "median")


def test_text_bad_inputs(tiny_bert):
    with pytest.raises(TypeError, match=r"wrap a single sentence as \[sentence\]"):
        tiny_bert.encode("a cat")
    with pytest.raises(ValueError, match="its taps are"):
        tiny_bert.encode(["a cat"], "pooler")


# ------------------------------------------------------------------ BigGAN
def test_biggan_expert_shapes_and_decode(biggan, no_network):
    assert (biggan.z_dim, biggan.embed_dim, biggan.dim, biggan.num_classes) == (16, 16, 32, 10)
    H = biggan.class_embeddings()
    assert H.shape == (10, 16)
    torch.testing.assert_close(biggan.embed([4]), biggan.model.embeddings(torch.eye(10)[4:5]))   # h = Wc
    z = torch.randn(3, 16)
    y = biggan.decode(biggan.latent(z, biggan.embed([1, 2, 3])))
    assert y.shape == (3, 3, 32, 32) and torch.isfinite(y).all() and 0 <= y.min() and y.max() <= 1
    assert y.std() > 1e-3                                        # not a constant image
    # Λ is the package's BigGAN: decode([z, Wc]) == BigGAN(z, c) mapped to [0, 1]
    with torch.no_grad():
        ref = (biggan.model(z, torch.eye(10)[[1, 2, 3]], 1.0) + 1) / 2
    torch.testing.assert_close(y, ref.clamp(0, 1), atol=1e-5, rtol=1e-5)
    assert not no_network


def test_biggan_paper_dimensions_follow_the_package_config():
    from pytorch_pretrained_biggan import BigGANConfig
    cfg = BigGANConfig()                                      # the package's BigGAN-deep-128 defaults
    assert cfg.z_dim + cfg.z_dim == 256                       # z_Θ = [z (128), ĥ (128)]: 256, not the paper's 268


def test_biggan_bad_inputs(biggan, no_network):
    with pytest.raises(ValueError, match=r"\(n, 32\)"):
        biggan.decode(torch.zeros(2, 31))
    with pytest.raises(TypeError, match="Θ ≡ 1"):
        biggan.encode(torch.zeros(2, 32))
    with pytest.raises(ValueError, match="indices 0..9"):
        biggan.embed([10])
    with pytest.raises(ValueError, match="truncate the noise z instead"):
        BigGANExpert(biggan.model, truncation=2.5)
    with pytest.raises(MissingWeightsError, match="neither a BigGAN name"):
        BigGANExpert.from_pretrained("biggan-deep-999")
    with pytest.raises(MissingWeightsError, match=r"biggan-deep-256-\{pytorch_model.bin,config.json\}"):
        BigGANExpert.from_pretrained(ROOT / "nbs")             # a directory without the files


def test_biggan_download_failure_names_the_fix(no_network, tmp_path, monkeypatch):
    monkeypatch.setenv("PYTORCH_PRETRAINED_BIGGAN_CACHE", str(tmp_path))
    with pytest.raises(MissingWeightsError, match="s3.amazonaws.com/models.huggingface.co/biggan"):
        BigGANExpert.from_pretrained("biggan-deep-256", cache_dir=tmp_path)
    assert no_network, "the download must have been attempted (and refused), not skipped silently"


# ------------------------------------------------------------------ dequantisation VAE
def test_dequantization_vae_architecture_is_tab_s4():
    vae = DequantizationVAE()                                 # 128 → 4096 → 128, depth 2 (3 FC-LReLU), decoder depth 3
    linears = lambda net: [m for m in net if isinstance(m, nn.Linear)]
    assert [l.out_features for l in linears(vae.encoder)] == [4096, 4096, 4096, 128]
    assert [l.out_features for l in linears(vae.mu)] == [4096, 4096, 4096, 128]
    assert [l.out_features for l in linears(vae.decoder)] == [4096, 4096, 4096, 4096, 128]
    assert all(m.negative_slope == 0.01 for m in vae.decoder if isinstance(m, nn.LeakyReLU))


def test_dequantizer_trains_saves_and_dequantizes(biggan, tmp_path):
    H = biggan.class_embeddings()
    vae = train_dequantizer(H, hidden=64, depth=1, epochs=800, batch_size=10, lr=3e-3, progress=False)
    g = torch.Generator().manual_seed(0)
    hat = vae.dequantize(H.repeat(10, 1), g)
    assert hat.shape == (100, 16) and torch.isfinite(hat).all()
    # continuous (two draws differ) but still near its own class embedding
    assert (hat[:10] - hat[10:20]).abs().max() > 1e-4
    err_own = (vae.reconstruct(H) - H).pow(2).sum(1).mean()
    spread = torch.cdist(H, H).pow(2).sum() / (10 * 9)
    assert err_own < 0.25 * spread, (err_own, spread)
    again = DequantizationVAE.load(vae.save(tmp_path / "deq.safetensors"))
    torch.testing.assert_close(again.reconstruct(H), vae.reconstruct(H))
    with pytest.raises(ValueError, match=r"class embeddings \(n, 16\)"):
        vae.dequantize(torch.zeros(2, 5))


# ------------------------------------------------------------------ captioner
def test_tiny_captioner(biggan, no_network):
    cap = tiny_captioner(image_size=32)
    y = biggan.decode(biggan.latent(torch.randn(4, 16), biggan.embed([0, 1, 2, 3])))
    out = cap.caption(y)
    assert len(out) == 4 and all(isinstance(c, str) and c for c in out)
    assert cap.caption(y) == out                               # deterministic: cacheable
    assert cap.caption((y * 255).round().byte().permute(0, 2, 3, 1).numpy()) == out   # uint8 NHWC too
    assert not no_network


def test_hub_names_fail_offline_with_the_fix(no_network, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(MissingWeightsError, match="huggingface-cli download"):
        SentenceEncoder.from_pretrained("sentence-transformers/no-such-model-xyz")
    with pytest.raises(MissingWeightsError, match="huggingface-cli download"):
        Captioner.from_pretrained("nlpconnect/vit-gpt2-image-captioning")
    with pytest.raises(MissingWeightsError, match="no model directory"):
        SentenceEncoder.from_pretrained("./no/such/dir")


# ------------------------------------------------------------------ torchvision
def test_resnet50_taps(no_network):
    r = TorchvisionClassifier.resnet50(weights=None, size=64)
    shapes = {t: r.output_shape(t) for t in r.taps}
    assert shapes == {"last": (2048,), "early": (256, 16, 16), "middle": (1024, 4, 4), "logits": (1000,)}
    x = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    outs = {t: r.encode(x, t) for t in r.taps}
    for t, o in outs.items():
        assert o.shape == (2, *shapes[t]) and torch.isfinite(o).all(), t
    assert r.model.fc.in_features == 2048 and len(r.model.layer3) == 6   # the real ResNet-50 blocks (3, 4, 6, 3)
    with pytest.raises(ValueError, match="its taps are 'last', 'early', 'middle', 'logits'"):
        r.encode(x, "layer5")
    with pytest.raises(ValueError, match=r"expects images of shape \(n, 64, 64, 3\)"):
        r.encode(np.zeros((1, 32, 32, 3), np.uint8))
    assert not no_network


def test_deeplabv3_taps(no_network):
    s = TorchvisionSegmenter.deeplabv3(weights=None, size=64, tap_size=8)
    assert s.n_classes == 21 and s.taps == ("argmax", "logits")
    x = np.random.default_rng(1).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    logits, onehot = s.encode(x, "logits"), s.encode(x, "argmax")
    assert logits.shape == onehot.shape == (2, 21, 8, 8) and torch.isfinite(logits).all()
    torch.testing.assert_close(onehot.sum(1), torch.ones(2, 8, 8))
    assert (onehot.argmax(1) == logits.argmax(1)).all()
    assert s.segment(x).shape == (2, 64, 64)
    assert not no_network


def test_torchvision_missing_weights_and_bad_names(no_network, monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(MissingWeightsError, match=r"download https://download.pytorch.org/models/resnet50"):
        TorchvisionClassifier.resnet50(weights="DEFAULT", download=False)
    with pytest.raises(MissingWeightsError, match="resnet50"):
        TorchvisionClassifier.resnet50(weights="DEFAULT")          # tries, the socket refuses, the error says where
    assert no_network
    with pytest.raises(ValueError, match="choose one of DEFAULT"):
        TorchvisionClassifier.resnet50(weights="IMAGENET9K")
    from ginn.experts.paper import torchvision_weights
    with pytest.raises(ValueError, match="unknown torchvision model 'resnet5'"):
        torchvision_weights("resnet5")


# ------------------------------------------------------------------ Inception
def test_inception_missing_weights_names_url_and_place(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv("GINN_INCEPTION_WEIGHTS", raising=False)
    for call in (inception_weights, InceptionFeatures, lambda: image_scores(np.zeros((2, 8, 8, 3), np.uint8),
                                                                              np.zeros((2, 8, 8, 3), np.uint8))):
        with pytest.raises(MissingWeightsError) as e:
            call()
        assert INCEPTION_URL in str(e.value) and str(tmp_path) in str(e.value) and "GINN_INCEPTION_WEIGHTS" in str(e.value)


def test_inception_score_limits():
    assert inception_score(torch.zeros(50, 7))[0] == pytest.approx(1.0)
    assert inception_score(torch.eye(7).repeat(10, 1) * 100, splits=1)[0] == pytest.approx(7.0, rel=1e-3)
