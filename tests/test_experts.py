"""The Expert protocol, the embedded experts and their trainers, safe saving and loading, and the MiniLM text expert."""
import math
import os
import socket

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from ginn.experts.embedded import (ORACLE_HEADS, ROLES, TRAINED_ROLES, WORLD_HEADS, ConvClassifier, ConvSegmenter,
                                   ConvVAE, Expert, Oracle, TextExpert, classifier_accuracy, evaluate_experts,
                                   load_expert, one_hot_argmax, perceptual_features, reconstruction_accuracy,
                                   reseeded_classifier, save_expert, segmentation_iou, segmenter_miou, to_input,
                                   train_experts, train_segmenter, train_vae, train_world_classifier, train_world_segmenter,
                                   train_world_vae, vae_loss, vae_psnr, vae_terms, world_targets)
from ginn.translator import Translator
from ginn.world import make_world

QUICK = dict(batch_size=32, progress=False)

IMAGE_EXPERTS = {
    "world_vae": lambda: ConvVAE("world_vae", size=32, channels=3, latent_dim=64),
    "lowres_vae": lambda: ConvVAE("lowres_vae", size=16, channels=3, latent_dim=32),
    "mnist_vae": lambda: ConvVAE("mnist_vae", size=28, channels=1, latent_dim=32),
    "world_classifier": lambda: ConvClassifier("world_classifier"),
    "mnist_classifier": lambda: ConvClassifier("mnist_classifier", heads={"digit": 10}, size=28, channels=1),
    "world_segmenter": lambda: ConvSegmenter("world_segmenter"),
    "full_res_segmenter": lambda: ConvSegmenter("full", tap_size=32),
}


def raw_images(expert, n=5, seed=0):
    "Random uint8 images (n, H, W, C) of the expert's input shape."
    c, h, w = expert.input_shape
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, c), dtype=np.uint8)


@pytest.fixture(scope="module")
def world():
    return make_world(1536, seed=5, n_captions=0)


@pytest.fixture(scope="module")
def held_out():
    return make_world(400, seed=6, n_captions=0)


@pytest.fixture(scope="module")
def trained(world):
    "Experts trained for a few seconds: enough to beat chance, far from the real experts."
    return dict(vae=train_world_vae(world, epochs=2, **QUICK),
                classifier=train_world_classifier(world, epochs=2, **QUICK),
                segmenter=train_world_segmenter(world, epochs=2, **QUICK))


@pytest.fixture(scope="module")
def text_expert():
    return TextExpert()


# --- the protocol -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("role", IMAGE_EXPERTS)
def test_image_expert_conforms_to_the_protocol(role):
    e = IMAGE_EXPERTS[role]()
    assert isinstance(e, Expert) and e.input_kind == "image" and isinstance(e.name, str)
    assert isinstance(e.taps, tuple) and len(e.taps) >= 1 and all(isinstance(t, str) for t in e.taps)
    assert not e.training and not any(m.training for m in e.modules())
    assert not any(p.requires_grad for p in e.parameters())
    e.train()                                   # frozen: stays in eval mode, so BatchNorm statistics never move
    assert not any(m.training for m in e.modules())
    x = raw_images(e)
    with torch.enable_grad():
        for tap in e.taps:
            z = e.encode(x, tap)
            assert tuple(z.shape) == (5, *e.output_shape(tap)), tap
            assert z.grad_fn is None and not z.requires_grad and torch.isfinite(z).all()
    assert torch.equal(e.encode(x), e.encode(x, e.taps[0]))
    assert e.output_shape() == e.output_shape(e.taps[0])
    torch.testing.assert_close(e.encode(to_input(x)), e.encode(x))        # uint8 NHWC == float NCHW / 255
    assert torch.equal(e.encode(torch.from_numpy(x)), e.encode(x))       # numpy or torch


@pytest.mark.parametrize("role", [r for r in IMAGE_EXPERTS if r.endswith("vae")])
def test_vae_posterior_and_decoder(role):
    vae = IMAGE_EXPERTS[role]()
    assert vae.stochastic and vae.taps == ("z",)
    x = raw_images(vae, n=6)
    mean, std = vae.encode_distribution(x)
    assert mean.shape == std.shape == (6, *vae.output_shape())
    assert (std > 0).all() and mean.grad_fn is None and std.grad_fn is None
    assert torch.equal(mean, vae.encode(x))
    with torch.enable_grad():
        y = vae.decode(mean + std * torch.randn_like(std))
    assert y.shape == (6, *vae.input_shape) and y.grad_fn is None
    assert y.min() >= 0 and y.max() <= 1
    with pytest.raises(ValueError, match=r"decodes codes of shape \(n, "):
        vae.decode(torch.zeros(2, vae.latent_dim + 1))


@pytest.mark.parametrize("role", [r for r in IMAGE_EXPERTS if not r.endswith("vae")])
def test_deterministic_experts_have_no_posterior_and_no_decoder(role):
    e = IMAGE_EXPERTS[role]()
    assert not e.stochastic
    with pytest.raises(TypeError, match="deterministic"):
        e.encode_distribution(raw_images(e))
    with pytest.raises(NotImplementedError, match="no decoder"):
        e.decode(torch.zeros(1, 4))


def test_classifier_and_segmenter_taps():
    clf, seg = ConvClassifier(), ConvSegmenter()
    assert clf.taps[0] == "last" and set(clf.taps) == {"early", "middle", "last", "logits"}
    assert clf.output_shape("logits") == (sum(WORLD_HEADS.values()),)
    assert seg.taps == ("argmax", "logits") and seg.output_shape("logits") == (7, 16, 16)
    x = raw_images(seg, n=3)
    onehot, logits = seg.encode(x, "argmax"), seg.encode(x, "logits")
    assert torch.equal(onehot.sum(1), torch.ones(3, 16, 16)) and set(onehot.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(onehot.argmax(1), logits.argmax(1))
    assert seg.segment(x).shape == (3, 32, 32)


def test_wrong_tap_names_the_taps():
    for e in (ConvClassifier(), ConvSegmenter(), ConvVAE()):
        with pytest.raises(ValueError) as err:
            e.encode(raw_images(e), "conv5")
        assert "conv5" in str(err.value) and all(repr(t) in str(err.value) for t in e.taps)


def test_wrong_input_shape_says_what_is_expected():
    clf = ConvClassifier()
    with pytest.raises(ValueError, match=r"expects images of shape \(n, 32, 32, 3\) uint8"):
        clf.encode(np.zeros((2, 16, 16, 3), np.uint8))                  # low-resolution copies
    with pytest.raises(ValueError, match=r"\(n, 32, 32, 3\)"):
        clf.encode(np.zeros((2, 3, 32, 32), np.uint8))                  # uint8 but channels first
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        clf.encode(np.full((2, 3, 32, 32), 200.0, np.float32))          # 0..255 floats
    with pytest.raises(TypeError):
        clf.encode(np.zeros((2, 32, 32, 3), np.int64))
    mnist = ConvClassifier(heads={"digit": 10}, size=28, channels=1)
    assert mnist.encode(np.zeros((2, 28, 28), np.uint8)).shape == (2, 128)   # grey without a channel axis


def test_to_input_layout():
    raw = np.random.default_rng(0).integers(0, 256, (3, 5, 4, 2), dtype=np.uint8)
    x = to_input(raw)
    assert x.dtype == torch.float32 and x.shape == (3, 2, 5, 4)
    assert torch.equal(x * 255, torch.from_numpy(raw).permute(0, 3, 1, 2).float())
    ro = raw.copy()
    ro.flags.writeable = False
    assert torch.equal(to_input(ro), x)


# --- learning ---------------------------------------------------------------------------------------------------

def test_classifier_learns_above_chance(trained, held_out):
    acc = classifier_accuracy(trained["classifier"], held_out.image, world_targets(held_out, WORLD_HEADS))
    chance = {k: 1 / n for k, n in WORLD_HEADS.items()}
    assert acc["colour"] > 0.5 and acc["scene"] > 0.6, acc
    assert all(acc[k] > chance[k] + 0.05 for k in WORLD_HEADS), acc


def test_segmenter_learns_above_chance(trained, held_out):
    q = segmenter_miou(trained["segmenter"], held_out.image, held_out.labels)
    untrained = segmenter_miou(ConvSegmenter(), held_out.image, held_out.labels)
    assert q["iou"][0] > 0.9, q                                   # background
    assert q["miou"] > untrained["miou"] + 0.1, (q, untrained)
    fg = segmentation_iou(trained["segmenter"].segment(held_out.image) > 0, held_out.labels > 0, 2)[1][1]
    assert fg > 0.5, fg                                           # object versus background


def test_vae_learns(trained, held_out):
    psnr, before = vae_psnr(trained["vae"], held_out.image), vae_psnr(ConvVAE(), held_out.image)
    assert psnr > before + 3 and psnr > 15, (psnr, before)


def test_vae_loss_terms_by_hand():
    "Eq. 14 at the optimal γ: D/2 log MSE + KL; a perceptual map adds weight · D/2 · log of its own MSE."
    x = torch.rand(4, 3, 8, 8)
    y = torch.rand(4, 3, 8, 8)
    mean, logvar = torch.randn(4, 5), torch.full((4, 5), -30.0)         # std ~ 3e-7: z is the mean

    def decode(z):
        return y
    d, mse = x[0].numel(), (y - x).pow(2).mean()
    kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).sum(1).mean()
    loss, got_mse = vae_loss(x, mean, logvar, decode)
    torch.testing.assert_close(got_mse, mse)
    torch.testing.assert_close(loss, 0.5 * d * torch.log(mse + 1e-8) + kl)

    def half(imgs):                                                     # one feature map: 2 x channel 0
        return [imgs[:, :1] * 2.0]
    feat_mse = (2.0 * (y - x)[:, :1]).pow(2).mean()
    with_perc, _ = vae_loss(x, mean, logvar, decode, features=half, perceptual_weight=0.5)
    torch.testing.assert_close(with_perc, loss + 0.5 * 0.5 * d * torch.log(feat_mse + 1e-8))
    cached, _ = vae_loss(x, mean, logvar, decode, features=half, perceptual_weight=0.5, real=half(x))
    torch.testing.assert_close(cached, with_perc)                       # maps of x given beforehand: the same loss
    stale, _ = vae_loss(x, mean, logvar, decode, features=half, perceptual_weight=0.5, real=half(y))
    assert not torch.isclose(stale, with_perc)                          # ... and they are what it compares against
    with pytest.raises(ValueError, match="no feature maps"):
        vae_loss(x, mean, logvar, decode, features=lambda imgs: [])


def test_vae_terms_are_the_parts_of_vae_loss():
    "vae_terms gives the decoded sample, L_rec (pixels + perceptual maps) and KL; vae_loss is L_rec + KL."
    x, y = torch.rand(4, 3, 8, 8), torch.rand(4, 3, 8, 8)
    mean, logvar = torch.randn(4, 5), torch.full((4, 5), -30.0)

    def half(imgs):
        return [imgs[:, :1] * 2.0]
    got_y, rec, kl, mse = vae_terms(x, mean, logvar, lambda z: y, features=half, perceptual_weight=0.5)
    assert got_y is y
    d = x[0].numel()
    torch.testing.assert_close(rec, 0.5 * d * torch.log(mse + 1e-8)
                               + 0.5 * 0.5 * d * torch.log((2.0 * (y - x)[:, :1]).pow(2).mean() + 1e-8))
    loss, _ = vae_loss(x, mean, logvar, lambda z: y, features=half, perceptual_weight=0.5)
    torch.testing.assert_close(loss, rec + kl)
    assert kl > 0


def test_perceptual_features_of_several_networks(trained, world):
    "A list of classifiers gives each one's maps in turn; the maps of a reseeded copy differ from the original's."
    clf = trained["classifier"]
    other = reseeded_classifier(clf, world[:256], seed=7, progress=False)
    x = torch.rand(2, 3, 32, 32)
    both = perceptual_features([clf, other], ("middle", "last"))(x)
    alone = perceptual_features(clf, ("middle", "last"))(x) + perceptual_features(other, ("middle", "last"))(x)
    assert len(both) == 4 and all(torch.equal(a, b) for a, b in zip(both, alone))
    assert not torch.equal(both[0], both[2])
    with pytest.raises(ValueError, match="at least one classifier"):
        perceptual_features([], ("middle",))


def test_reseeded_classifier_keeps_the_recipe_and_changes_the_seed(trained, world):
    clf = trained["classifier"]
    copy = reseeded_classifier(clf, world[:256], seed=11, progress=False)
    assert copy.name == f"{clf.name}_seed11"
    assert {k: v for k, v in copy.config.items() if k != "name"} == {k: v for k, v in clf.config.items() if k != "name"}
    assert copy.info["seed"] == 11 and copy.info["epochs"] == clf.info["epochs"] and copy.info["lr"] == clf.info["lr"]
    assert not torch.equal(copy.heads["shape"].weight, clf.heads["shape"].weight)
    again = reseeded_classifier(clf, world[:256], seed=11, progress=False)
    assert torch.equal(again.heads["shape"].weight, copy.heads["shape"].weight)       # the seed decides it
    with pytest.raises(ValueError, match="own: the copy would be the same network"):
        reseeded_classifier(clf, world[:256], seed=clf.info["seed"], progress=False)
    with pytest.raises(ValueError, match="no training record"):
        reseeded_classifier(ConvClassifier(), world[:256], seed=3, progress=False)


def test_world_vae_with_perceptual_seeds_reads_every_classifier(trained, world):
    clf = trained["classifier"]
    vae = train_world_vae(world[:256], epochs=1, perceptual=clf, perceptual_taps=("middle",),
                          perceptual_seeds=[21, 22], **QUICK)
    assert vae.info["perceptual"]["network"] == [clf.name, f"{clf.name}_seed21", f"{clf.name}_seed22"]
    assert vae.info["perceptual"]["seeds"] == [21, 22]
    single = train_world_vae(world[:256], epochs=1, perceptual=clf, perceptual_taps=("middle",), **QUICK)
    assert not torch.equal(single.decoder_in.weight, vae.decoder_in.weight)           # the extra maps changed g
    with pytest.raises(ValueError, match="give perceptual"):
        train_world_vae(world[:64], epochs=1, perceptual_seeds=[21], **QUICK)
    with pytest.raises(ValueError, match="repeats a seed"):
        train_world_vae(world[:64], epochs=1, perceptual=clf, perceptual_seeds=[21, 21], **QUICK)


def test_perceptual_features_are_differentiable_and_checked(trained):
    clf = trained["classifier"]
    features = perceptual_features(clf, ("middle", "early"))
    x = torch.rand(3, 3, 32, 32, requires_grad=True)
    maps = features(x)
    assert [tuple(m.shape[1:]) for m in maps] == [clf.output_shape("middle"), clf.output_shape("early")]
    sum(m.sum() for m in maps).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in clf.parameters())      # the perceptual network stays frozen
    with pytest.raises(ValueError, match="has no tap 'z'"):
        perceptual_features(clf, ("z",))
    with pytest.raises(TypeError, match="ConvClassifier"):
        perceptual_features(trained["vae"])
    with pytest.raises(ValueError, match="must be frozen"):
        perceptual_features(ConvClassifier().requires_grad_(True))


@pytest.mark.parametrize("size, channels", [(32, 3), (16, 3), (28, 1)])
def test_vae_decoder_blocks(size, channels):
    "Residual blocks add decoder capacity at every scale and keep the shapes; blocks=0 is the plain decoder."
    plain, deep = (ConvVAE(size=size, channels=channels, latent_dim=8, blocks=b) for b in (0, 2))
    assert sum(p.numel() for p in deep.parameters()) > sum(p.numel() for p in plain.parameters())
    assert plain.encoder.state_dict().keys() == deep.encoder.state_dict().keys()
    for vae in (plain, deep):
        assert vae.decode(torch.randn(3, 8)).shape == (3, channels, size, size)
    with pytest.raises(ValueError, match="blocks must be >= 0"):
        ConvVAE(blocks=-1)


def test_vae_saved_without_blocks_loads_as_plain_decoder(tmp_path):
    "A file written before `blocks` existed (config without it) holds the plain decoder, and loads."
    old = ConvVAE(latent_dim=8, blocks=0)
    old._config.pop("blocks")
    back = load_expert(save_expert(old, tmp_path / "old.safetensors"))
    assert back.config["blocks"] == 0
    z = torch.randn(2, 8)
    assert torch.equal(back.decode(z), old.decode(z))


def test_vae_gradient_clipping_is_applied_and_recorded(world):
    plain = train_vae(world.image[:128], epochs=1, **QUICK)
    clipped = train_vae(world.image[:128], epochs=1, clip=1e-3, **QUICK)
    assert clipped.info["clip"] == 1e-3 and "clip" not in plain.info
    assert not torch.equal(clipped.decoder_in.weight, plain.decoder_in.weight)     # the steps were capped
    again = train_vae(world.image[:128], epochs=1, clip=1e-3, **QUICK)
    assert torch.equal(again.decoder_in.weight, clipped.decoder_in.weight)         # ... deterministically


def test_perceptual_vae_trains_and_records_it(world, held_out, trained):
    vae = train_world_vae(world[:512], epochs=1, perceptual=trained["classifier"], perceptual_taps=("early",),
                          **QUICK)
    assert vae.info["perceptual"] == {"network": trained["classifier"].name, "taps": ["early"], "weight": 1.0}
    assert vae_psnr(vae, held_out.image) > vae_psnr(ConvVAE(), held_out.image)
    with pytest.raises(TypeError, match="not the name"):
        train_world_vae(world[:64], perceptual="world_classifier", **QUICK)
    with pytest.raises(ValueError, match="perceptual network reads images"):
        train_vae(world.low16[:64], perceptual=trained["classifier"], **QUICK)


def test_train_experts_trains_the_perceptual_network_first(world, tmp_path):
    quick = dict(epochs=1, batch_size=32)
    settings = {"world_vae": {**quick, "perceptual": "world_classifier"}, "world_classifier": quick}
    experts = train_experts(world[:256], settings=settings, roles=("world_vae", "world_classifier"),
                            out_dir=tmp_path, progress=False)
    assert list(experts) == ["world_vae", "world_classifier"]            # returned in the order asked
    assert experts["world_vae"].info["perceptual"]["network"] == "world_classifier"
    again = train_experts(world[:256], settings={"world_vae": settings["world_vae"]}, roles=("world_vae",),
                          out_dir=tmp_path, progress=False)               # the saved classifier is used
    assert again["world_vae"].info["perceptual"]["network"] == "world_classifier"
    with pytest.raises(ValueError, match="needs the expert 'world_classifier'"):
        train_experts(world[:256], settings={"world_vae": settings["world_vae"]}, roles=("world_vae",),
                      progress=False)
    with pytest.raises(ValueError, match="no trained role"):
        train_experts(world[:256], settings={"world_vae": {"perceptual": "vgg"}}, roles=("world_vae",),
                      progress=False)


def test_reconstruction_accuracy_is_the_oracle_on_decoded_scenes(trained, held_out):
    oracle = Oracle(ConvClassifier(heads=ORACLE_HEADS, width=8), trained["segmenter"])
    scenes = held_out[:50]
    acc = reconstruction_accuracy(trained["vae"], oracle, scenes, batch_size=16)
    recon = trained["vae"].decode(trained["vae"].encode(scenes.image))
    assert acc == classifier_accuracy(oracle.classifier, recon, world_targets(scenes, ORACLE_HEADS))
    assert set(acc) == set(ORACLE_HEADS) and all(0 <= v <= 1 for v in acc.values())
    with pytest.raises(TypeError, match="ConvVAE and an Oracle"):
        reconstruction_accuracy(trained["classifier"], oracle, scenes)


def test_trainers_are_seeded_and_return_frozen_experts(world):
    a = train_world_vae(world[:256], epochs=1, seed=3, **QUICK)
    b = train_world_vae(world[:256], epochs=1, seed=3, **QUICK)
    for (k, v), w in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(v, w), k
    assert not a.training and not any(p.requires_grad for p in a.parameters())
    assert a.info["epochs"] == 1 and a.info["steps"] == 256 // 32 and a.info["seconds"] >= 0


def test_trainer_input_errors(world):
    with pytest.raises(ValueError, match="63 rows for 64 images"):
        train_segmenter(world.image[:64], world.labels[:63], **QUICK)
    with pytest.raises(ValueError, match="class indices 0..6"):
        train_segmenter(world.image[:64], world.labels[:64] + 7, **QUICK)
    with pytest.raises(ValueError, match="square uint8 images"):
        train_vae(world.image[:64].astype(np.float32), **QUICK)
    with pytest.raises(ValueError, match="unknown expert roles"):
        train_experts(world, settings={"world_gan": {}})
    with pytest.raises(ValueError, match="MNIST"):
        train_experts(world, roles=("mnist_vae",))


def test_roles_table_is_the_one_list_of_roles():
    "Trained experts first, in table order; the four features read off the data last; taps stated once."
    assert TRAINED_ROLES == ("world_vae", "world_classifier", "world_segmenter", "oracle", "lowres_vae", "mnist_vae",
                             "mnist_classifier", "mnist_oracle")
    assert list(ROLES) == [*TRAINED_ROLES, "minilm", "attributes", "domain", "digit"]
    for name, role in ROLES.items():
        assert role.dataset in ("world", "mnist") and role.taps is not None, name
        if name in TRAINED_ROLES:
            assert callable(role.trainer) and role.taps == (() if "oracle" in name else role.expert.taps), name
        else:
            assert role.trainer is None and role.taps, name
    with pytest.raises(AttributeError):
        ROLES["world_vae"].taps = ("x",)                          # frozen
    world = make_world(2, seed=0, n_captions=0)
    for name, make in IMAGE_EXPERTS.items():                      # what the role reads fits its expert
        if name in ROLES:
            e, role = make(), ROLES[name]
            assert type(e) is role.expert and e.taps == role.taps, name
            if role.dataset == "world":
                c, h, w = e.input_shape
                assert getattr(world, role.input).shape[1:] == (h, w, c), name


def test_one_hot_argmax():
    logits = torch.tensor([[[[0.0, 2.0]], [[1.0, -1.0]], [[0.5, 0.0]]]])          # (1, 3, 1, 2)
    onehot = one_hot_argmax(logits)
    assert onehot.shape == (1, 3, 1, 2) and onehot.dtype == torch.float32
    assert onehot[0, :, 0, 0].tolist() == [0.0, 1.0, 0.0] and onehot[0, :, 0, 1].tolist() == [1.0, 0.0, 0.0]


def test_segmentation_iou_by_hand():
    miou, iou = segmentation_iou(np.array([[0, 0, 1, 1]]), np.array([[0, 1, 1, 1]]), 3)
    assert iou[0] == pytest.approx(1 / 2) and iou[1] == pytest.approx(2 / 3) and math.isnan(iou[2])
    assert miou == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_evaluate_experts_reports_every_role(trained, held_out):
    from ginn.packaged import load_mnist
    oracle = Oracle(ConvClassifier(heads=ORACLE_HEADS, width=8), trained["segmenter"])
    experts = dict(world_vae=trained["vae"], world_classifier=trained["classifier"],
                   world_segmenter=trained["segmenter"], oracle=oracle,
                   lowres_vae=ConvVAE(size=16, latent_dim=32), mnist_vae=ConvVAE(size=28, channels=1, latent_dim=32),
                   mnist_classifier=ConvClassifier(heads={"digit": 10}, size=28, channels=1),
                   mnist_oracle=ConvClassifier(heads={"digit": 10}, size=28, channels=1, width=8))
    q = evaluate_experts(experts, held_out, load_mnist("test"))
    assert set(q) == set(TRAINED_ROLES)
    assert set(q["world_classifier"]) == {f"acc_{k}" for k in WORLD_HEADS}
    assert set(q["oracle"]["classifier"]) == {f"acc_{k}" for k in ORACLE_HEADS}
    assert set(q["mnist_classifier"]) == {"acc_digit"} and 0 <= q["mnist_classifier"]["acc_digit"] <= 1
    assert set(q["mnist_oracle"]) == {"acc_digit"}
    assert all(isinstance(q[r]["psnr"], float) for r in ("world_vae", "lowres_vae", "mnist_vae"))
    assert 0 <= q["world_segmenter"]["miou"] <= 1


def test_oracle_scores(trained, held_out):
    oracle = Oracle(ConvClassifier(heads=ORACLE_HEADS, width=8), trained["segmenter"])
    attrs = oracle.attributes(held_out.image[:7])
    assert set(attrs) == set(ORACLE_HEADS) and all(v.shape == (7,) and v.dtype == torch.long for v in attrs.values())
    assert oracle.segment(held_out.image[:7]).shape == (7, 32, 32)
    f = oracle.features(held_out.image[:7])
    assert f.shape == (7, oracle.feature_dim) and f.grad_fn is None
    assert not any(p.requires_grad for p in oracle.parameters())


# --- saving and loading -----------------------------------------------------------------------------------------

def without_seconds(info):
    "`info` without its wall-clock entries, at any depth: what a saved expert keeps."
    return {k: without_seconds(v) if isinstance(v, dict) else v for k, v in info.items() if k != "seconds"}


def test_save_load_round_trip(trained, held_out, tmp_path):
    oracle = Oracle(trained["classifier"], trained["segmenter"])
    oracle.info = {"note": "round trip"}
    for name, e in dict(trained, oracle=oracle).items():
        path = save_expert(e, tmp_path / f"{name}.safetensors")
        back = load_expert(path)
        assert type(back) is type(e) and back.config == e.config and back.info == without_seconds(e.info)
        sd, sd_back = e.state_dict(), back.state_dict()
        assert sd.keys() == sd_back.keys() and all(torch.equal(sd[k], sd_back[k]) for k in sd)
        assert not back.training and not any(p.requires_grad for p in back.parameters())
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{n}.safetensors" for n in [*trained, "oracle"])
    vae = load_expert(tmp_path / "vae.safetensors")
    assert torch.equal(vae.encode(held_out.image[:9]), trained["vae"].encode(held_out.image[:9]))
    assert torch.equal(load_expert(tmp_path / "oracle.safetensors").features(held_out.image[:9]),
                       oracle.features(held_out.image[:9]))


def test_load_errors_name_the_problem(trained, tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_expert(tmp_path / "missing.safetensors")
    (tmp_path / "garbage.safetensors").write_bytes(b"\x00" * 3 + b"not safetensors")
    with pytest.raises(ValueError, match="corrupt"):
        load_expert(tmp_path / "garbage.safetensors")
    good = save_expert(trained["vae"], tmp_path / "vae.safetensors")
    data = good.read_bytes()
    (tmp_path / "truncated.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="corrupt"):
        load_expert(tmp_path / "truncated.safetensors")
    Translator(dim=4, cond_dim=3, n_flows=2, hidden_dim=8, hidden_depth=1).save(tmp_path / "tau.safetensors")
    with pytest.raises(ValueError, match="not a ginn expert file .*Translator"):
        load_expert(tmp_path / "tau.safetensors")
    tensors = trained["vae"].state_dict()
    meta = {"format": "ginn-expert-1", "ginn_class": "ConvVAE",
            "config": '{"name": "vae", "size": 32, "channels": 3, "latent_dim": 16, "width": 32}'}
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp_path / "mismatch.safetensors"), metadata=meta)
    with pytest.raises(ValueError, match="do not match the saved config"):
        load_expert(tmp_path / "mismatch.safetensors")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp_path / "alien.safetensors"),
              metadata={**meta, "ginn_class": "os.system"})
    with pytest.raises(ValueError, match="unknown expert class"):
        load_expert(tmp_path / "alien.safetensors")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp_path / "badjson.safetensors"),
              metadata={**meta, "config": "{not json"})
    with pytest.raises(ValueError, match="corrupt"):
        load_expert(tmp_path / "badjson.safetensors")


# --- the text expert --------------------------------------------------------------------------------------------

def test_text_expert_loads_and_encodes_without_network(monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("the test blocks the network: the text expert must load offline")
    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    e = TextExpert()
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    z = e.encode(["a red circle on a blue sky"])
    assert z.shape == (1, 384)


def test_text_expert_protocol_and_semantics(text_expert):
    e = text_expert
    assert e.input_kind == "text" and e.taps == ("embedding",) and e.output_shape() == (384,)
    assert not e.stochastic and not e.training and not any(p.requires_grad for p in e.parameters())
    triples = [("a small red circle at the top left on a blue sky",
                "a tiny crimson disc near the upper left against the sky",
                "a large green cross at the bottom on the grass"),
               ("a big yellow star in the centre on the sand",
                "a large golden star in the middle of a beach",
                "a little purple heart in the night sky")]
    z = e.encode([s for t in triples for s in t])
    assert z.shape == (6, 384) and z.grad_fn is None and z.dtype == torch.float32
    torch.testing.assert_close(z.norm(dim=1), torch.ones(6))
    for i in range(len(triples)):
        a, para, other = z[3 * i], z[3 * i + 1], z[3 * i + 2]
        assert a @ para > a @ other + 0.05, (i, float(a @ para), float(a @ other))
    assert torch.equal(e.encode(np.array(["a red circle"])), e.encode(["a red circle"]))


def test_text_expert_input_errors(text_expert):
    with pytest.raises(TypeError, match=r"wrap a single sentence"):
        text_expert.encode("a red circle")
    with pytest.raises(TypeError, match="list of str"):
        text_expert.encode(np.zeros((2, 32, 32, 3), np.uint8))
    with pytest.raises(ValueError, match="no tap"):
        text_expert.encode(["a red circle"], tap="pooler")


def test_save_refuses_what_it_cannot_save(text_expert, tmp_path):
    with pytest.raises(TypeError, match="needs no saving"):
        save_expert(text_expert, tmp_path / "text.safetensors")
    with pytest.raises(TypeError, match="save_expert saves"):
        save_expert(torch.nn.Linear(2, 2), tmp_path / "linear.safetensors")
    assert not list(tmp_path.iterdir())
