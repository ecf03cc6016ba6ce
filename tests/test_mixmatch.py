"""Mix-and-Match networks (ginn.baselines.mixmatch): the Berhu loss, unpooling with the indices of the encoder that
ran, the zero-pair split and what reaches the training loss, latent consistency, pseudo-pairs that leave the RGB
translators alone, the metrics, and a tiny end-to-end run whose losses fall."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ginn.baselines.mixmatch import (MODALITIES, N_CLASSES, Code, Decoder, Encoder, MixMatchNets, MixMatchSettings,
                                     PairedTranslator, ZeroPairBatch, alignment_factor, berhu, depth_floor,
                                     depth_scores, evaluate_zero_pair, latent_consistency, mixmatch_losses,
                                     pseudo_pair_loss, segmentation_scores, train_mixmatch, train_paired, upsample,
                                     zero_pair_split)
from ginn.world import SCENES, make_world

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(widths=(8, 16), batch_size=16)


@pytest.fixture(scope="module")
def world():
    return make_world(96, seed=5, n_captions=0)


# ---------------------------------------------------------------- the Berhu loss (Eq. 4.6)
def test_berhu_is_l1_below_c_and_the_quadratic_above():
    torch.manual_seed(0)
    target = torch.rand(3, 1, 6, 6)
    pred = target + torch.randn(3, 1, 6, 6)
    e = (pred - target).flatten(1).abs()
    c = 0.2 * e.max(1, keepdim=True).values                        # a fifth of each image's largest error
    expected = torch.where(e <= c, e, (e ** 2 + c ** 2) / (2 * c)).mean(1)
    assert torch.allclose(berhu(pred, target, reduce=False), expected, atol=1e-6)
    assert (e > c).any() and (e <= c).any()                         # both branches are exercised
    # errors all equal: c = |e| / 5 < |e|, so every pixel is on the quadratic branch
    flat = torch.full((1, 4), 2.0)
    assert berhu(flat, torch.zeros(1, 4)).item() == pytest.approx((4 + 0.16) / 0.8)
    # c is per image: scaling one image's errors does not change the other image's loss
    a = berhu(pred, target, reduce=False)
    scaled = pred.clone()
    scaled[0] = target[0] + 10 * (pred[0] - target[0])
    b = berhu(scaled, target, reduce=False)
    assert torch.allclose(a[1:], b[1:]) and b[0] == pytest.approx(10 * a[0].item(), rel=1e-5)


def test_berhu_is_continuous_at_c_with_matching_slope():
    # image = [e, 5]: c = 1 (the largest error is 5); sweep the first pixel's error across c
    def first_pixel_term(err: float) -> float:
        x = torch.tensor([[err, 5.0]], dtype=torch.float64)
        return 2 * berhu(x, torch.zeros_like(x)).item() - (25 + 1) / 2   # remove the second pixel's term
    below, at, above = first_pixel_term(1 - 1e-7), first_pixel_term(1.0), first_pixel_term(1 + 1e-7)
    assert at == pytest.approx(1.0) and below == pytest.approx(at, abs=1e-6) and above == pytest.approx(at, abs=1e-6)
    slope_below = (first_pixel_term(1.0) - first_pixel_term(1 - 1e-4)) / 1e-4
    slope_above = (first_pixel_term(1 + 1e-4) - first_pixel_term(1.0)) / 1e-4
    assert slope_below == pytest.approx(1.0, abs=1e-3) and slope_above == pytest.approx(1.0, abs=1e-3)
    assert first_pixel_term(3.0) == pytest.approx((9 + 1) / 2)      # the quadratic, not L1 (3)
    assert berhu(torch.ones(2, 5), torch.ones(2, 5)).item() == 0.0  # exact prediction: c = 0, no NaN


# ---------------------------------------------------------------- pooling indices as side information
def test_unpooling_puts_values_where_that_encoders_maxima_were():
    torch.manual_seed(0)
    enc_d, enc_s = Encoder(1, (4, 8)), Encoder(N_CLASSES, (4, 8))
    code_d = enc_d(torch.rand(2, 1, 16, 16))
    code_s = enc_s(F.one_hot(torch.randint(0, N_CLASSES, (2, 16, 16)), N_CLASSES).permute(0, 3, 1, 2).float())
    for code in (code_d, code_s):
        for level in range(2):
            pre = code.features[level]                               # what the max-pool saw
            values = torch.rand_like(code.indices[level], dtype=torch.float32) + 1   # all > 0
            up = upsample(values, code, level, use_indices=True)
            assert up.shape == pre.shape
            # every 2x2 window holds exactly one non-zero, at the position of that window's maximum
            windows = up.unfold(2, 2, 2).unfold(3, 2, 2).flatten(-2)
            assert ((windows != 0).sum(-1) == 1).all()
            maxima = pre.unfold(2, 2, 2).unfold(3, 2, 2).flatten(-2)
            at = windows.argmax(-1, keepdim=True)
            assert torch.equal(maxima.gather(-1, at).squeeze(-1), maxima.max(-1).values)
            assert torch.equal(windows.max(-1).values, values)
    # the decoder uses the indices of whichever encoder ran: same latent, other indices -> other output
    h = torch.rand_like(code_d.h)
    dec = Decoder(N_CLASSES, (4, 8), side="indices").eval()
    mixed_d, mixed_s = code_d.with_latent(h), Code(h, code_s.indices, code_s.features)
    assert not torch.allclose(dec(mixed_d), dec(mixed_s))
    for side in ("none",):                                          # without side information only h matters
        plain = Decoder(N_CLASSES, (4, 8), side=side).eval()
        assert torch.allclose(plain(mixed_d), plain(mixed_s))


def test_rgb_decoder_never_uses_pooling_indices():
    nets = MixMatchNets(widths=(4, 8)).eval()
    code = nets.code(torch.rand(2, 1, 32, 32), "depth")
    other = nets.code(torch.randint(0, N_CLASSES, (2, 32, 32)), "labels")
    swapped = Code(code.h, other.indices, other.features)
    assert torch.allclose(nets.decode(code, "rgb"), nets.decode(swapped, "rgb"))
    assert not torch.allclose(nets.decode(code, "labels"), nets.decode(swapped, "labels"))


@pytest.mark.parametrize("side", ["none", "skip", "indices"])
def test_shapes_of_every_translator(side):
    nets = MixMatchNets(widths=(4, 8), side=side)
    inputs = dict(rgb=torch.rand(3, 3, 32, 32), depth=torch.rand(3, 1, 32, 32) + 0.25,
                  labels=torch.randint(0, N_CLASSES, (3, 32, 32)))
    channels = dict(rgb=3, depth=1, labels=N_CLASSES)
    for src in MODALITIES:
        assert nets.code(inputs[src], src).h.shape == (3, 8, 8, 8)
        for dst in MODALITIES:
            out = nets.translate(inputs[src], src, dst, noise=0.5)
            assert out.shape == (3, channels[dst], 32, 32)
    rgb = nets.translate(inputs["depth"], "depth", "rgb")
    assert rgb.min() >= 0 and rgb.max() <= 1 and (nets.translate(inputs["labels"], "labels", "depth") > 0).all()
    assert nets.translate_multimodal(inputs["rgb"], inputs["depth"], "depth", "labels").shape == (3, N_CLASSES, 32, 32)


# ---------------------------------------------------------------- latent consistency and alignment
def test_latent_consistency_is_zero_for_identical_encoders():
    torch.manual_seed(0)
    a = Encoder(1, (4, 8)).eval()
    b = Encoder(1, (4, 8)).eval()
    b.load_state_dict(a.state_dict())
    x = torch.rand(4, 1, 16, 16)
    assert latent_consistency(a(x).h, b(x).h).item() == 0.0
    c = Encoder(1, (4, 8)).eval()                                   # other weights: a positive distance
    assert latent_consistency(a(x).h, c(x).h).item() > 0
    d = torch.ones(2, 3, 2, 2)
    assert latent_consistency(d, 0 * d, "norm").item() == pytest.approx(math.sqrt(12))
    assert latent_consistency(d, 0 * d, "rms").item() == pytest.approx(1.0)
    assert alignment_factor(d, 2 * d) == pytest.approx(1.0) and alignment_factor(d, -d) == pytest.approx(-1.0)


# ---------------------------------------------------------------- the zero-pair split
def test_halves_share_no_scene_and_hold_only_their_modalities(world):
    split = zero_pair_split(world, seed=3)
    assert not set(split.rs_scenes.tolist()) & set(split.rd_scenes.tolist())
    assert sorted(split.rs_scenes.tolist() + split.rd_scenes.tolist()) == list(range(len(world)))
    assert abs(len(split.rs_scenes) - len(split.rd_scenes)) <= 1
    assert torch.equal(split.rs_labels, torch.as_tensor(world.labels[split.rs_scenes]).long())
    assert torch.allclose(split.rd_depth[:, 0], torch.as_tensor(world.depth[split.rd_scenes]))
    assert not hasattr(split, "rs_depth") and not hasattr(split, "rd_labels")
    other = zero_pair_split(world, seed=4)
    assert not np.array_equal(split.rs_scenes, other.rs_scenes)


def test_a_batch_with_depth_and_labels_is_refused():
    rgb, depth, labels = torch.rand(2, 3, 8, 8), torch.rand(2, 1, 8, 8), torch.zeros(2, 8, 8).long()
    scenes = np.arange(2)
    ZeroPairBatch("rs", scenes, rgb, labels=labels).check()
    ZeroPairBatch("rd", scenes, rgb, depth=depth).check()
    for bad in (ZeroPairBatch("rs", scenes, rgb, labels=labels, depth=depth),
                ZeroPairBatch("rd", scenes, rgb, labels=labels, depth=depth),
                ZeroPairBatch("rs", scenes, rgb, depth=depth), ZeroPairBatch("ds", scenes, rgb, labels=labels)):
        with pytest.raises(ValueError):
            bad.check()
    nets, settings = MixMatchNets(widths=(4, 8)), MixMatchSettings(**TINY)
    with pytest.raises(ValueError):
        mixmatch_losses(nets, ZeroPairBatch("rs", scenes, rgb, labels=labels, depth=depth),
                        ZeroPairBatch("rd", scenes, rgb, depth=depth), settings.stage(2), settings)


def test_no_depth_labels_pair_reaches_the_training_loss(world):
    split = zero_pair_split(world, seed=0)
    seen = []
    settings = MixMatchSettings(**TINY, steps=(4, 4, 4))
    train_mixmatch(MixMatchNets.from_settings(settings), split, settings, log_every=2,
                   on_batch=lambda stage, batch: seen.append((stage, batch)))
    assert [s for s, _ in seen].count(3) == 8 and len(seen) == 24   # one batch per half per step
    rs, rd = set(split.rs_scenes.tolist()), set(split.rd_scenes.tolist())
    for _, batch in seen:
        assert not {"depth", "labels"} <= batch.holds
        assert set(batch.scenes.tolist()) <= (rs if batch.half == "rs" else rd)
        if batch.half == "rs":
            assert torch.equal(batch.labels, torch.as_tensor(world.labels[batch.scenes]).long())
        else:
            assert torch.allclose(batch.depth[:, 0], torch.as_tensor(world.depth[batch.scenes]))
    # what is not in the split cannot matter: scrambling the depth of D_RS and the labels of D_RD changes nothing
    scrambled = world[np.arange(len(world))]
    scrambled.depth = scrambled.depth.copy()
    scrambled.labels = scrambled.labels.copy()
    scrambled.depth[split.rs_scenes] = 0.5
    scrambled.labels[split.rd_scenes] = 1
    weights = []
    for w in (world, scrambled):
        torch.manual_seed(0)
        nets = MixMatchNets.from_settings(settings)
        train_mixmatch(nets, zero_pair_split(w, seed=0), settings, log_every=2)
        weights.append(nets.state_dict())
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


# ---------------------------------------------------------------- the stages
def test_stage_two_freezes_the_rgb_encoder_and_pseudo_pairs_spare_rgb_translators(world):
    split = zero_pair_split(world, seed=0)
    settings = MixMatchSettings(**TINY, steps=(3, 3, 0))
    nets = MixMatchNets.from_settings(settings)
    train_mixmatch(nets, split, settings, stages=(1,), log_every=3)
    before = {k: v.clone() for k, v in nets.encoders["rgb"].state_dict().items()}
    train_mixmatch(nets, split, settings, stages=(2,), log_every=3)
    after = nets.encoders["rgb"].state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)    # weights and BatchNorm statistics
    assert not any(p.requires_grad for p in nets.encoders["rgb"].parameters())
    # L_PP's gradients reach f_S, f_D, g_S, g_D through the unseen translators, never the RGB side
    for p in nets.parameters():
        p.requires_grad_(True)
    nets.train()
    nets.zero_grad()
    rs, rd = split.batch("rs", np.arange(8)), split.batch("rd", np.arange(8))
    pseudo_pair_loss(nets, rs, rd, settings).backward()
    assert all(p.grad is None for p in nets.encoders["rgb"].parameters())
    assert all(p.grad is None for p in nets.decoders["rgb"].parameters())
    for m in ("depth", "labels"):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in nets.encoders[m].parameters())
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in nets.decoders[m].parameters())
    with pytest.raises(ValueError):
        train_mixmatch(nets, split, settings, stages=(2, 1))


def test_stage_weights_follow_the_thesis():
    s = MixMatchSettings()
    one, two, three = s.stage(1), s.stage(2), s.stage(3)
    assert (one["lambda_r"], one["lambda_a"], one["lambda_l2"], one["lambda_s"], one["lambda_d"]) == (1, 1, 1, 100, 10)
    assert (two["lambda_r"], two["lambda_a"], two["lambda_l2"]) == (10, 10, 100)
    assert not (one["autoencoders"] or one["latent"] or one["noise"] or one["freeze_rgb_encoder"])
    assert two["autoencoders"] and two["latent"] and two["noise"] == 0.5 and two["freeze_rgb_encoder"]
    assert three["lambda_pp"] == 100 and three["lr"] == pytest.approx(2e-5) and two["lambda_pp"] == 0
    assert s.lr == 2e-4
    off = MixMatchSettings(autoencoders=False, latent_loss=False, noise_std=0.0).stage(2)   # Table 4.3, row 1
    assert not (off["autoencoders"] or off["latent"] or off["noise"]) and off["freeze_rgb_encoder"]


def test_ablation_switches_remove_their_loss_terms(world):
    split = zero_pair_split(world, seed=0)
    rs, rd = split.batch("rs", np.arange(8)), split.batch("rd", np.arange(8))
    full = MixMatchSettings(**TINY)
    nets = MixMatchNets.from_settings(full)
    _, parts, fakes = mixmatch_losses(nets, rs, rd, full.stage(2), full)
    assert parts["latent"] > 0 and len(fakes) == 3                  # T_SR, T_DR and the RGB autoencoder
    bare = MixMatchSettings(**TINY, autoencoders=False, latent_loss=False)
    _, parts, fakes = mixmatch_losses(nets, rs, rd, bare.stage(2), bare)
    assert parts["latent"] == 0 and len(fakes) == 2


# ---------------------------------------------------------------- metrics
def test_segmentation_and_depth_scores_on_known_cases():
    target = np.array([[[0, 0, 1, 1], [0, 0, 2, 2]]])
    pred = np.array([[[0, 0, 1, 2], [0, 0, 2, 2]]])
    s = segmentation_scores(pred, target, 3)
    # IoU: class 0 4/4, class 1 1/2, class 2 2/3
    assert s["miou"] == pytest.approx((1 + 0.5 + 2 / 3) / 3) and s["miou_no_bg"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert s["global_acc"] == pytest.approx(7 / 8)
    d = depth_scores(np.array([1.0, 1.2, 1.5, 4.0]), np.ones(4))
    assert (d["delta1"], d["delta2"], d["delta3"]) == (0.5, 0.75, 0.75)
    assert d["rmse"] == pytest.approx(math.sqrt((0 + 0.04 + 0.25 + 9) / 4))
    assert d["rmse_log"] == pytest.approx(math.sqrt(sum(math.log(v) ** 2 for v in (1.2, 1.5, 4.0)) / 4))


def test_depth_floor_is_what_labels_cannot_say(world):
    floor = depth_floor(world)
    ground = np.isin(world.scene, (SCENES.index("grass"), SCENES.index("sand")))
    assert 0 < ground.mean() < 1
    assert 0 < floor["rmse"] < 0.125 and floor["delta1"] == 1.0     # the ramp is at most 0.25 from flat
    assert depth_floor(world[~ground])["rmse"] == 0.0 and depth_floor(world[ground])["rmse"] == 0.0
    # the predictor it scores beats both pure guesses on the mixed set
    assert floor["rmse"] < depth_floor(world, ground_share=0.0)["rmse"]
    assert floor["rmse"] < depth_floor(world, ground_share=1.0)["rmse"]


# ---------------------------------------------------------------- a tiny end-to-end run
def test_tiny_training_lowers_the_losses_and_evaluates():
    train, test = make_world(48, seed=7, n_captions=0), make_world(24, seed=8, n_captions=0)
    split = zero_pair_split(train, seed=0)
    settings = MixMatchSettings(**TINY, steps=(60, 40, 20), lr=2e-3)
    nets = MixMatchNets.from_settings(settings)
    probe = (torch.as_tensor(test.image).permute(0, 3, 1, 2).float() / 255, torch.as_tensor(test.depth)[:, None],
             torch.as_tensor(test.labels).long())
    history = train_mixmatch(nets, split, settings, probe=probe, log_every=10)
    assert history.stage_steps == [60, 40, 20] and history.stage == [1] * 6 + [2] * 4 + [3] * 2
    assert len(history.alignment) == len(history.step) == 12
    first, last_one = history.losses[0], history.losses[5]
    for term in ("seg", "depth", "total"):                          # stage 1 learns the seen translators
        assert last_one[term] < 0.7 * first[term], (term, first[term], last_one[term])
    two = [h for s, h in zip(history.stage, history.losses) if s == 2]
    assert two[-1]["total"] < 0.9 * two[0]["total"]                 # stage 2 (autoencoders, L_LAT, noise) too
    assert two[-1]["latent"] < two[0]["latent"] and two[-1]["l2"] < two[0]["l2"]
    assert all(h["pp"] > 0 for s, h in zip(history.stage, history.losses) if s == 3)
    assert all(h["pp"] == 0 and h["latent"] == 0 for s, h in zip(history.stage, history.losses) if s == 1)
    rows = evaluate_zero_pair(nets, test)
    assert {"D->S", "S->D", "D->R->S", "S->R->D", "(R,D)->S", "R->S (seen)", "alignment"} <= set(rows)
    assert 0 <= rows["D->S"]["miou"] <= 1 and rows["S->D"]["rmse"] > 0
    assert rows["R->S (seen)"]["global_acc"] > 0.7                 # the background alone is most pixels


def test_paired_oracle_learns():
    train = make_world(48, seed=9, n_captions=0)
    settings = MixMatchSettings(**TINY, lr=2e-3)
    oracle = PairedTranslator("depth", "labels", (8, 16))
    losses = train_paired(oracle, torch.as_tensor(train.depth)[:, None], torch.as_tensor(train.labels).long(),
                          settings, steps=40)
    assert len(losses) == 40 and np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
