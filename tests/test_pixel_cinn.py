"""The pixel-space cINN baseline (ginn.baselines.pixel_cinn): exact inverses and log-determinants, equivalence with the
authors' framework FrEIA on copied weights, training, and the exact colour posterior of the grey8 condition."""
import math

import numpy as np
import pytest
import torch

from ginn.baselines.pixel_cinn import (RegressionCNN, build_pixel_model, daynight_pairs, load_pixel_cinn,
                                       save_pixel_cinn, task_pairs)
from ginn.baselines.pixel_cinn import (TOY_COLOURS, ConditionalCoupling, HaarDownsample, PixelCINN, Squeeze, allowed_colours,
                                       bits_per_dim, colour_sets, colour_scores, conv_subnet, dequantize,
                                       evaluate_pixel_cinn, fc_subnet, grey8, grey8_level, latent_scaling,
                                       quantize, randomize_, sample_many, toy_colourize, train_pixel_cinn)
from ginn.baselines.pixel_cinn import (PALETTE_THRESHOLD, colour_coherence, nearest_palette, off_palette_error,
                                       pixel_train_settings, val_bits_at)
from ginn.world import COLOUR_RGB, COLOURS, make_world

pytestmark = pytest.mark.usefixtures("one_thread")


def jacobian_matrix(fn, x: torch.Tensor) -> torch.Tensor:
    "The (D, D) Jacobian of `fn` (one sample in, one sample out, any shape) at `x`."
    jac = torch.autograd.functional.jacobian(lambda a: fn(a).flatten(), x)
    return jac.reshape(x.numel(), x.numel())


# ---------------------------------------------------------------- Haar downsampling and the squeeze
@pytest.mark.parametrize("Down", [HaarDownsample, Squeeze])
def test_downsampling_is_an_exactly_invertible_rotation(Down):
    down = Down(2)
    x = torch.randn(1, 2, 4, 4, dtype=torch.float64)
    matrix = jacobian_matrix(lambda a: down(a[None])[0][0], x[0])
    assert torch.allclose(matrix @ matrix.T, torch.eye(32, dtype=torch.float64), atol=1e-12)
    assert abs(torch.logdet(matrix @ matrix.T).item()) < 1e-10          # log det(M M^T) = 2 log|det M| = 0
    assert abs(torch.linalg.slogdet(matrix).logabsdet.item()) < 1e-10
    y, logdet = down(torch.randn(3, 2, 8, 8))
    assert torch.equal(logdet, torch.zeros(3))
    assert torch.allclose(down(down.reverse(y))[0], y, atol=1e-6)
    x = torch.randn(3, 2, 8, 8)
    assert torch.allclose(down.reverse(down(x)[0]), x, atol=1e-6)


def test_haar_bands_are_average_and_differences():
    x = torch.tensor([[1., 2.], [3., 4.]]).view(1, 1, 2, 2)
    y, _ = HaarDownsample(1)(x)
    assert y.flatten().tolist() == [5.0, -1.0, -2.0, 0.0]       # (1+2+3+4)/2, left-right, top-bottom, diagonal


# ---------------------------------------------------------------- the conditional coupling block
def test_coupling_starts_as_the_identity():
    ccb = ConditionalCoupling(4, cond_channels=2, hidden=8)
    u = torch.randn(3, 4, 5, 5)
    v, logdet = ccb(u, torch.randn(3, 2, 5, 5))
    assert torch.equal(v, u) and torch.equal(logdet, torch.zeros(3))


@pytest.mark.parametrize("learned_clamp", [True, False])
def test_conv_coupling_inverse_and_logdet_on_2x4x4(learned_clamp):
    ccb = randomize_(ConditionalCoupling(2, cond_channels=3, hidden=8, clamp=1.0, learned_clamp=learned_clamp), seed=3)
    u, c = torch.randn(4, 2, 4, 4), torch.randn(4, 3, 4, 4)
    v, logdet = ccb(u, c)
    assert not torch.allclose(v, u, atol=1e-2)                   # the random weights do something
    assert torch.allclose(ccb.reverse(v, c), u, atol=1e-5)
    for i in range(2):
        matrix = jacobian_matrix(lambda a: ccb(a[None], c[i:i + 1])[0][0], u[i])
        assert torch.allclose(logdet[i], torch.linalg.slogdet(matrix).logabsdet, atol=1e-4)


def test_fc_and_odd_channel_couplings():
    for channels, kind, shape in [(7, "fc", (7,)), (3, "conv", (3, 4, 4))]:
        cond = (5,) if kind == "fc" else (5, 4, 4)
        ccb = randomize_(ConditionalCoupling(channels, cond_channels=5, hidden=8, kind=kind), seed=1)
        u, c = torch.randn(2, *shape), torch.randn(2, *cond)
        v, logdet = ccb(u, c)
        assert torch.allclose(ccb.reverse(v, c), u, atol=1e-5)
        matrix = jacobian_matrix(lambda a: ccb(a[None], c[:1])[0][0], u[0])
        assert torch.allclose(logdet[0], torch.linalg.slogdet(matrix).logabsdet, atol=1e-4)


def test_unconditional_coupling():
    ccb = randomize_(ConditionalCoupling(4, cond_channels=0, hidden=8))
    u = torch.randn(2, 4, 3, 3)
    assert torch.allclose(ccb.reverse(ccb(u)[0]), u, atol=1e-5)


# ---------------------------------------------------------------- the whole multi-scale network
def tiny_cinn(**kw) -> PixelCINN:
    settings = dict(channels=3, size=8, blocks=(1, 1, 1), hidden=(8, 8, 8), fc_blocks=2, fc_hidden=16,
                    subnet_depth=1, cond_widths=(4, 4, 4), cond_flat=6)
    return PixelCINN(**{**settings, **kw})


@pytest.mark.parametrize("kw", [{}, dict(downsample="squeeze"), dict(phi="identity"), dict(phi="none"),
                                dict(actnorm=True, learned_clamp=False), dict(fc_blocks=0)])
def test_pixel_cinn_is_invertible_with_the_logdet_of_its_jacobian(kw):
    torch.manual_seed(0)
    # float64: random weights make a badly conditioned network, and this test is about the algebra
    model = randomize_(tiny_cinn(**kw), scale=0.2, seed=2).double()
    x, y = torch.rand(3, 3, 8, 8, dtype=torch.float64), torch.rand(3, 1, 8, 8, dtype=torch.float64)
    if kw.get("actnorm"):
        model.train()(x, y)                                      # ActNorm initialises from a batch
    model.eval()
    z, logdet = model(x, y)
    assert z.shape == (3, 192)
    assert torch.allclose(model.reverse(z, y), x, atol=1e-9)
    matrix = jacobian_matrix(lambda a: model(a[None], y[:1])[0][0], x[0])
    assert torch.allclose(logdet[0], torch.linalg.slogdet(matrix).logabsdet, atol=1e-8)


def test_latent_layout_and_condition_matters():
    model = randomize_(tiny_cinn(), scale=0.2).eval()
    x, y = torch.rand(2, 3, 8, 8), torch.rand(2, 1, 8, 8)
    sizes = [math.prod(s) for s in model.split_shapes] + [math.prod(model.coarse_shape)]
    assert sizes == [96, 48, 48] and sum(sizes) == model.dim == 192
    assert not torch.allclose(model(x, y)[0], model(x, y.flip(0))[0])
    with pytest.raises(ValueError):
        PixelCINN(size=10, blocks=(1, 1, 1), hidden=(4, 4, 4), cond_widths=(4, 4, 4))   # 10 is not divisible by 4


def test_frozen_phi_is_not_trained():
    model = tiny_cinn(phi="frozen")
    before = {k: v.clone() for k, v in model.phi.state_dict().items()}
    x, y, _ = toy_colourize(64, size=8)
    train_pixel_cinn(model, x, y, steps=3, batch_size=16)
    assert all(torch.equal(before[k], v) for k, v in model.phi.state_dict().items())


# ---------------------------------------------------------------- equivalence with FrEIA 0.2 on copied weights
def test_haar_matches_freia():
    reshapes = pytest.importorskip("FrEIA.modules.reshapes")
    theirs = reshapes.HaarDownsampling([(3, 8, 8)])
    ours = HaarDownsample(3)
    x = torch.randn(4, 3, 8, 8)
    (y_theirs,), jac = theirs([x])
    y_ours, logdet = ours(x)
    assert torch.allclose(y_ours, y_theirs, atol=1e-6)
    assert abs(float(jac)) < 1e-9 and torch.equal(logdet, torch.zeros(4))
    (x_theirs,), _ = theirs([y_ours.clone()], rev=True)     # FrEIA 0.2 scales the input of its reverse in place
    assert torch.allclose(ours.reverse(y_ours), x_theirs, atol=1e-6)


@pytest.mark.parametrize("kind", ["conv", "fc"])
def test_coupling_matches_freia_glow_block(kind):
    coupling = pytest.importorskip("FrEIA.modules.coupling_layers")
    channels, cond, gamma = 4, 3, 1.7
    shape, cond_shape = ((channels, 6, 6), (cond, 6, 6)) if kind == "conv" else ((channels,), (cond,))
    subnet = conv_subnet if kind == "conv" else fc_subnet
    ours = randomize_(ConditionalCoupling(channels, cond, hidden=8, kind=kind, depth=1), seed=5)
    with torch.no_grad():                                        # FrEIA's clamp is one constant for all channels
        ours.clamp1.gamma.fill_(gamma)
        ours.clamp2.gamma.fill_(gamma)
    theirs = coupling.GLOWCouplingBlock([shape], [cond_shape], subnet_constructor=lambda i, o: subnet(i, o, 8, 1),
                                        clamp=gamma, clamp_activation="TANH")
    # FrEIA's subnet2 computes [s, t] for the first half from the second (our net1), subnet1 the reverse (our net2)
    theirs.subnet2.load_state_dict(ours.net1.state_dict())
    theirs.subnet1.load_state_dict(ours.net2.state_dict())
    u, c = torch.randn(5, *shape), torch.randn(5, *cond_shape)
    v_ours, logdet_ours = ours(u, c)
    (v_theirs,), jac_theirs = theirs([u], c=[c])
    assert torch.allclose(v_ours, v_theirs, atol=1e-6)
    assert torch.allclose(logdet_ours, jac_theirs, atol=1e-5)
    (u_theirs,), jac_rev = theirs([v_ours], c=[c], rev=True)
    assert torch.allclose(ours.reverse(v_ours, c), u_theirs, atol=1e-6)
    assert torch.allclose(jac_rev, -logdet_ours, atol=1e-5)


# ---------------------------------------------------------------- loss, dequantisation, training
def test_bits_per_dim_correction():
    assert bits_per_dim(0.0) == pytest.approx(8.0)               # uniform density on [0, 1]^D: the raw bytes
    assert bits_per_dim(-3 * math.log(2)) == pytest.approx(5.0)
    assert bits_per_dim(0.0, scale=256 / 255) == pytest.approx(8 - math.log2(256 / 255))
    k = torch.randint(0, 256, (8, 3, 4, 4), dtype=torch.uint8)
    x = dequantize(k, torch.Generator().manual_seed(0))
    assert (x >= 0).all() and (x < 1).all() and (x * 256 - k.float()).std() > 0.2
    assert np.array_equal(quantize(x), k.permute(0, 2, 3, 1).numpy())
    assert torch.equal(dequantize(k, noise=False), (k.float() + 0.5) / 256)


def test_nll_of_a_fresh_model_is_the_gaussian_density_of_x_minus_half():
    model = tiny_cinn(phi="none").eval()                         # a fresh model is the shift x - 1/2
    x = dequantize(torch.full((2, 3, 8, 8), 128, dtype=torch.uint8), noise=False)
    result = evaluate_pixel_cinn(model, quantize(x), np.zeros((2, 8, 8), np.float32), noise=False)
    z = (x - 0.5).flatten(1)                                     # 1/512 from the origin everywhere
    expected = (0.5 * z.pow(2).sum(1) + 0.5 * 192 * math.log(2 * math.pi)).mean().item()
    assert result["nats"] == pytest.approx(expected, rel=1e-6)
    assert result["bits_per_dim"] == pytest.approx(bits_per_dim(expected / 192))


def test_likelihood_falls_on_a_toy_conditional_and_uses_the_condition():
    train_x, train_y, _ = toy_colourize(1024, seed=0)
    held_x, held_y, _ = toy_colourize(256, seed=1)
    result = {}
    for phi in ["joint", "none"]:
        torch.manual_seed(0)
        model = PixelCINN(channels=3, size=4, blocks=(2, 2), hidden=(16, 16), fc_blocks=2, fc_hidden=32,
                          subnet_depth=1, cond_widths=(8, 8), cond_flat=8, phi=phi, actnorm=True)
        before = evaluate_pixel_cinn(model, held_x, held_y)["bits_per_dim"]
        history = train_pixel_cinn(model, train_x, train_y, steps=400, batch_size=32, lr=3e-3,
                                   val=(held_x, held_y), val_every=50)
        result[phi] = evaluate_pixel_cinn(model, held_x, held_y)["bits_per_dim"]
        assert result[phi] < before - 2, (phi, before, result[phi])
        if phi == "joint":
            assert history.val_nll[-1] < history.val_nll[0], history.val_nll
        assert history.stopped == "step cap" and history.best_step == 400
    assert result["joint"] < result["none"] - 0.5, result     # knowing the pattern is worth bits


def test_resume_is_bit_exact(tmp_path):
    x, y, _ = toy_colourize(128, size=8)
    settings = dict(steps=10, batch_size=16, val=(x[:32], y[:32]), val_every=5, patience=3)
    torch.manual_seed(0)
    straight = tiny_cinn(actnorm=True)
    h_straight = train_pixel_cinn(straight, x, y, **settings)
    torch.manual_seed(0)
    resumed = tiny_cinn(actnorm=True)
    h_cut = train_pixel_cinn(resumed, x, y, **settings, ckpt_dir=tmp_path, time_limit=0.0)
    assert h_cut.stopped == "time cap" and h_cut.step == [1]
    torch.manual_seed(123)                                       # the global RNG state is restored from the checkpoint
    h_resumed = train_pixel_cinn(resumed, x, y, **settings, ckpt_dir=tmp_path, resume=True)
    assert h_resumed.loss == h_straight.loss and h_resumed.val_nll == h_straight.val_nll
    for k, v in straight.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k


def test_lr_schedule_steps_down_at_40_and_80_percent():
    from ginn.baselines.pixel_cinn import step_decay
    assert [step_decay(s, 100) for s in (0, 39, 40, 79, 80, 99)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])


# ---------------------------------------------------------------- inference helpers
def test_temperature_zero_and_latent_scaling():
    model = randomize_(tiny_cinn(), scale=0.2).eval()
    y = torch.rand(2, 1, 8, 8)
    cold = sample_many(model, y, k=3, temperature=0.0)
    assert torch.allclose(cold[:, 0], cold[:, 2]) and not torch.allclose(cold[0, 0], cold[1, 0])
    warm = sample_many(model, y, k=3, generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(warm[:, 0], warm[:, 1])
    sweep = latent_scaling(model, y, scales=(0.0, 1.0), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(sweep[0], cold[:, 0], atol=1e-6)      # λ = 0 is the sample at temperature 0
    z, _ = model(sweep[1], y)
    assert torch.allclose(z.pow(2).sum(1), torch.full((2,), 192.0), rtol=1e-3)   # ||z*||^2 = D


# ---------------------------------------------------------------- grey8 and the exact colour posterior
ISSUE_SETS = [{"blue"}, {"red", "purple"}, {"orange", "green", "cyan"}, {"pink"}, {"yellow"}]


def test_grey8_colour_sets_follow_from_the_palette():
    # computed here from COLOUR_RGB and BT.601 luma, independently of the module
    luma = (COLOUR_RGB.astype(np.float64) @ np.array([0.299, 0.587, 0.114])) / 255
    levels = np.round(7 * luma).astype(int)
    computed = [{COLOURS[i] for i in np.flatnonzero(levels == lv)} for lv in np.unique(levels)]
    assert sorted(map(sorted, computed)) == sorted(map(sorted, ISSUE_SETS))
    assert [set(s) for s in colour_sets().values()] == computed
    assert np.array_equal(grey8_level(COLOUR_RGB), levels)
    assert sum(len(s) for s in computed if len(s) > 1) == 5    # 5/8 of the colours (and scenes) are ambiguous
    assert allowed_colours(COLOURS.index("green")) == [COLOURS.index(c) for c in ("orange", "green", "cyan")]


def test_grey8_of_world_objects_is_their_colours_level():
    world = make_world(48, seed=3, n_captions=0)
    g = grey8(world.image)
    assert g.dtype == np.float32 and set(np.unique(np.round(g * 7)).tolist()) <= set(range(8))
    interior = world.labels > 0
    for i in range(len(world)):
        pure = interior[i] & (world.image[i] == COLOUR_RGB[world.colour[i]]).all(-1)
        assert pure.any()
        assert np.allclose(g[i][pure] * 7, grey8_level(COLOUR_RGB[world.colour[i]]))


def test_colour_scores_on_a_known_case():
    red, purple, yellow = (COLOURS.index(c) for c in ("red", "purple", "yellow"))
    sampled = np.array([[red] * 4 + [purple] * 4, [red] * 8, [yellow] * 8])
    scores = colour_scores(sampled, np.array([red, purple, yellow]))
    assert scores["consistency"] == 1.0 and scores["coverage"] == 0.5 and scores["determinism"] == 1.0
    assert scores["balance"] == pytest.approx(0.5 * (abs(12 / 16 - 0.5) + abs(4 / 16 - 0.5)))


def test_palette_threshold_separates_the_palette():
    rgb = COLOUR_RGB.astype(float)
    gaps = np.sqrt(((rgb[:, None] - rgb[None]) ** 2).sum(-1))[np.triu_indices(len(rgb), 1)]
    assert PALETTE_THRESHOLD == pytest.approx(gaps.min() / 2)
    index, distance = nearest_palette(COLOUR_RGB)                  # every palette colour is its own nearest
    assert (index == np.arange(len(COLOURS))).all() and (distance == 0).all()


def test_off_palette_error_and_coherence_on_known_images():
    red, blue, green = (COLOURS.index(c) for c in ("red", "blue", "green"))
    images = np.zeros((4, 8, 8, 3), np.uint8)
    masks = np.zeros((4, 8, 8), bool)
    masks[:, 1:7, 1:7] = True                                      # 36 pixels; the 16 inner ones count
    images[:, 1:7, 1:7] = COLOUR_RGB[red]
    images[1, 2:4, 2:6] = COLOUR_RGB[blue]                         # 8 of 16 inner pixels blue: a tie, majority 8
    images[1, 4, 2:6] = COLOUR_RGB[green]                          # 4 green: red 4, blue 8, green 4
    images[2, 2:6, 2:6] = 128                                      # grey inner pixels: off the palette
    images[3, 2:6, 2:6] = COLOUR_RGB[red] - np.array([math.ceil(PALETTE_THRESHOLD) - 1, 0, 0], np.uint8)   # still red
    assert off_palette_error(images, masks).tolist() == [0.0, 0.0, 1.0, 0.0]
    assert colour_coherence(images, masks).tolist() == [1.0, 0.5, 1.0, 1.0]
    assert off_palette_error(images, masks, erode=False)[2] == pytest.approx(16 / 36)
    assert colour_coherence(images, masks, erode=False)[1] == pytest.approx(24 / 36)   # red 24 of 36
    shifted = images[3:4].astype(float) - [2, 0, 0]               # pushed past the threshold: off the palette
    assert off_palette_error(shifted, masks[3:4])[0] == 1.0
    assert np.isnan(colour_coherence(images, np.zeros_like(masks))).all()


def test_true_world_objects_are_on_the_palette_and_coherent():
    world = make_world(40, seed=3, max_objects=1)
    masks = world.labels > 0
    has = masks.any((1, 2))
    assert has.any()
    # inside the eroded mask the true renders are (nearly: a thin arm's blended core can remain) the palette colour
    assert np.nanmean(off_palette_error(world.image[has], masks[has])) < 0.01
    assert np.nanmean(colour_coherence(world.image[has], masks[has])) > 0.99
    assert np.nanmean(off_palette_error(world.image[has], masks[has], erode=False)) > 0.05   # the antialiased rim


def test_run_train_settings_and_bits_at_a_step():
    px = {"train": {"steps": 800, "lr": 1e-3}, "models": {"a": {"phi": "joint"}, "b": {"train": {"steps": 300, "noise": False}}}}
    assert pixel_train_settings(px, "a") == {"steps": 800, "lr": 1e-3}
    assert pixel_train_settings(px, "b") == {"steps": 300, "lr": 1e-3, "noise": False}
    model = build_pixel_model(px["models"]["b"] | {"blocks": [1], "hidden": [4], "fc_blocks": 1, "fc_hidden": 8,
                                                   "cond_widths": [4], "cond_flat": 4}, 3, 4, 1, 0)
    assert isinstance(model, PixelCINN)                            # a run's `train` is no network argument
    with pytest.raises(ValueError, match="unknown train key"):
        pixel_train_settings({"train": {}, "models": {"c": {"train": {"epochs": 1}}}}, "c")
    curves = {"step": [100, 200, 300], "val_nll": [-100.0, -200.0, -300.0]}
    assert val_bits_at(curves, 250, 10) == pytest.approx(bits_per_dim(-20.0))
    assert val_bits_at(curves, 300, 10) == pytest.approx(bits_per_dim(-30.0))
    assert val_bits_at(curves, 50, 10) is None


# ---------------------------------------------------------------- the regression CNN and saved runs
def test_regression_cnn_is_an_exact_gaussian_flow_with_one_answer():
    reg = randomize_(RegressionCNN(size=4, width=8, depth=2), seed=1)
    x, y = torch.rand(3, 3, 4, 4, dtype=torch.float64), torch.rand(3, 1, 4, 4, dtype=torch.float64)
    reg = reg.double()
    z, logdet = reg(x, y)
    assert torch.allclose(reg.reverse(z, y), x, atol=1e-10)
    jac = jacobian_matrix(lambda a: reg(a[None], y[:1])[0][0], x[0])
    assert torch.linalg.slogdet(jac).logabsdet.item() == pytest.approx(logdet[0].item(), abs=1e-8)
    assert torch.equal(reg.sample(y), reg.sample(y, temperature=3.0))         # no latent: no diversity


def test_regression_cnn_learns_the_conditional_mean():
    x, y, which = toy_colourize(512, seed=0)
    reg = build_pixel_model({"network": "regression", "width": 16, "depth": 2}, 3, 4, 1, seed=0)
    before = evaluate_pixel_cinn(reg, x, y)["bits_per_dim"]
    train_pixel_cinn(reg, x, y, steps=300, batch_size=64, lr=3e-3)
    assert evaluate_pixel_cinn(reg, x, y)["bits_per_dim"] < before - 1
    pred = reg.sample(torch.as_tensor(y[:64])[:, None]).mean((2, 3)) * 255       # (64, 3) mean colour
    mid = (TOY_COLOURS[0] + TOY_COLOURS[1]) / 2 * np.asarray(y[:64]).mean((1, 2))[:, None]
    assert np.abs(pred.numpy() - mid).mean() < 25                             # between red and blue, not either


def test_saved_pixel_networks_load_and_other_files_are_refused(tmp_path):
    for settings in ({"network": "regression", "width": 8, "depth": 1},
                     dict(blocks=(1, 1), hidden=(8, 8), fc_blocks=1, fc_hidden=8, subnet_depth=1, cond_widths=(4, 4),
                          cond_flat=4)):
        model = randomize_(build_pixel_model(settings, 3, 4, 1, seed=2), seed=2)
        path = save_pixel_cinn(model, tmp_path / "run.safetensors")
        loaded = load_pixel_cinn(path)
        x, y = torch.rand(2, 3, 4, 4), torch.rand(2, 1, 4, 4)
        assert type(loaded) is type(model) and torch.allclose(loaded(x, y)[0], model.eval()(x, y)[0])
    from ginn.io import save_safetensors
    save_safetensors({"w": torch.zeros(1)}, tmp_path / "other.safetensors", {"format": "something else"})
    with pytest.raises(ValueError, match="is not a saved pixel-space network"):
        load_pixel_cinn(tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match="network must be one of cinn, regression"):
        build_pixel_model({"network": "gan"}, 3, 4, 1, seed=0)


def test_task_pairs_of_both_tasks():
    world = make_world(20, seed=4)
    x, y = task_pairs("colourize", world)
    assert x.shape == (20, 32, 32, 3) and y.shape == (20, 32, 32) and len(np.unique(y)) <= 8
    x, y = daynight_pairs(world)
    assert y.shape == (20, 3, 32, 32) and y.dtype == np.float32 and 0 <= y.min() and y.max() <= 1
    with pytest.raises(ValueError, match="unknown pixel-space task 'sketch'"):
        task_pairs("sketch", world)


def test_initialisation_depends_on_the_seed_only_and_leaves_the_global_stream():
    from ginn.baselines.pixel_cinn import build_pixel_model
    settings = dict(blocks=[1, 1], hidden=[8, 8], fc_blocks=1, fc_hidden=16, cond_widths=[4, 4], cond_flat=8)
    models = []
    for state in (1, 2):                    # what ran before in a worker process must not matter
        torch.manual_seed(state)
        models.append(build_pixel_model(settings, 3, 8, 1, seed=0))
        after = torch.rand(1)
        torch.manual_seed(state)
        assert torch.equal(after, torch.rand(1))
    assert all(torch.equal(a, b) for a, b in zip(models[0].state_dict().values(), models[1].state_dict().values()))
