"""The cascaded deep translation baseline (ginn.baselines.cascade): the WGAN-GP penalty, AdaIN, the per-domain
normaliser, the translators' structure, the inverters, level-by-level training and the counterfactual render."""
import numpy as np
import pytest
import torch
from torch import nn

from ginn.baselines.cascade import (AdaINTranslator, Cascade, CascadeSettings, Critic, DeepTranslator,
                                    FeatureNormalizer, Inverter, LevelData, LevelPair, adain, counterfactual,
                                    critic_loss, feature_levels, fit_cascade, gradient_penalty, level_shapes,
                                    primary_support, reconstruction_error, train_inverter, train_level,
                                    translator_losses)
from ginn.experts.embedded import ConvClassifier
from ginn.world import SHAPES, make_world

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(width=8, content_width=8, style_width=8, style_hidden=16, critic_width=8, inverter_width=16,
            batch_size=16, inverter_batch_size=16, n_critic=1)


class LinearCritic(nn.Module):
    "D(x) = w . flatten(x): its gradient is w everywhere."

    def __init__(self, w: torch.Tensor):
        super().__init__()
        self.w = w

    def forward(self, x):
        return x.flatten(1) @ self.w


@pytest.fixture(scope="module")
def classifier():
    "An untrained (randomly initialised, frozen) world classifier: the plumbing does not need trained features."
    torch.manual_seed(0)
    return ConvClassifier(width=4)


@pytest.fixture(scope="module")
def domains():
    "Circle (A) and square (B) scenes of the world: 24 of each."
    w = make_world(200, seed=11, n_captions=0)
    a, b = w[w.shape == SHAPES.index("circle")][:24], w[w.shape == SHAPES.index("square")][:24]
    assert len(a) == len(b) == 24
    return a, b


# ---------------------------------------------------------------- WGAN-GP
@pytest.mark.parametrize("norm, expected", [(1.0, 0.0), (3.0, 4.0), (0.5, 0.25)])
def test_gradient_penalty_of_linear_critics(norm, expected):
    torch.manual_seed(1)
    w = torch.randn(3 * 4 * 4)
    real, fake = torch.randn(32, 3, 4, 4), torch.randn(32, 3, 4, 4)
    gp = gradient_penalty(LinearCritic(norm * w / w.norm()), real, fake).item()
    assert abs(gp - expected) < 1e-5
    if norm != 1.0:
        assert gp > 0.01


def test_gradient_penalty_is_differentiable_in_the_critic():
    critic = Critic(4, 4, width=8)
    gp = gradient_penalty(critic, torch.randn(8, 4, 4, 4), torch.randn(8, 4, 4, 4))
    gp.backward()
    weights = [p for name, p in critic.named_parameters() if name.endswith("weight")]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in weights)   # (the output bias has no gradient)


def test_critic_loss_is_the_wasserstein_gap_plus_penalty():
    w = torch.randn(12)
    w = w / w.norm()
    real, fake = torch.randn(16, 3, 2, 2) + 1.0, torch.randn(16, 3, 2, 2)
    loss, gap = critic_loss(LinearCritic(w), real, fake, lambda_gp=10.0)
    expected = (real.flatten(1) @ w).mean() - (fake.flatten(1) @ w).mean()
    assert abs(gap - expected.item()) < 1e-5 and abs(loss.item() + expected.item()) < 1e-4   # penalty 0


# ---------------------------------------------------------------- AdaIN
def test_adain_gives_the_requested_per_channel_statistics():
    torch.manual_seed(2)
    gamma, beta = torch.rand(4, 6) * 2 + 0.2, torch.randn(4, 6) * 3
    for scale, shift in ((1.0, 0.0), (7.0, -5.0)):            # the input's own statistics do not leak through
        h = torch.randn(4, 6, 8, 8) * scale + shift
        out = adain(h, gamma, beta)
        assert torch.allclose(out.mean((2, 3)), beta, atol=1e-4)
        assert torch.allclose(out.std((2, 3), unbiased=False), gamma, atol=1e-3)


# ---------------------------------------------------------------- the normaliser
def test_normaliser_round_trips_inside_the_clamp_and_clamps_outside():
    torch.manual_seed(3)
    f = torch.rand(300, 4, 4, 4) * torch.tensor([1.0, 10.0, 0.1, 3.0]).view(1, 4, 1, 1) + 2.0
    norm = FeatureNormalizer.fit(f)
    assert torch.allclose(norm.mean, f.mean((0, 2, 3)), atol=1e-4)
    assert torch.allclose(norm.std, f.std((0, 2, 3), unbiased=False), atol=1e-4)
    y, free = norm(f), norm(f, clamp=False)
    assert y.min() >= -1 and y.max() <= 1
    inside = free.abs() < 1
    assert inside.float().mean() > 0.3 and (~inside).any()
    back = norm.inverse(y)
    assert torch.allclose(back[inside], f[inside], atol=1e-4)
    outside = ~inside
    assert not torch.allclose(back[outside], f[outside], atol=1e-2)       # the clamp is irreversible
    edge = norm.mean.view(1, 4, 1, 1) + torch.sign(free) * norm.std.view(1, 4, 1, 1)
    assert torch.allclose(back[outside], edge.expand_as(f)[outside], atol=1e-4)


def test_normaliser_of_a_dead_channel_is_finite():
    f = torch.rand(50, 2, 3, 3)
    f[:, 1] = 0
    norm = FeatureNormalizer.fit(f)
    assert torch.isfinite(norm(f)).all() and (norm(f)[:, 1] == 0).all()


def test_normalisers_are_per_domain(classifier, domains):
    a, b = domains
    fa, fb = feature_levels(classifier, a.image)[3], feature_levels(classifier, b.image)[3]
    na, nb = FeatureNormalizer.fit(fa), FeatureNormalizer.fit(fb)
    assert not torch.allclose(na.mean, nb.mean)
    assert torch.allclose(na(fa, clamp=False).mean((0, 2, 3)), torch.zeros(fa.shape[1]), atol=1e-4)


# ---------------------------------------------------------------- feature levels and the translators
def test_feature_levels_match_the_classifier_taps(classifier, domains):
    images = domains[0].image[:5]
    levels = feature_levels(classifier, images)
    assert {k: tuple(v.shape[1:]) for k, v in levels.items()} == level_shapes(classifier) == {
        1: (4, 16, 16), 2: (8, 8, 8), 3: (16, 4, 4)}
    assert torch.allclose(levels[2], classifier.encode(images, "early"), atol=1e-6)
    assert torch.allclose(levels[3], classifier.encode(images, "middle"), atol=1e-6)


def test_deep_translator_shapes_and_range():
    for c, s in ((64, 4), (32, 8)):
        out = DeepTranslator(c, s)(torch.randn(3, c, s, s) * 5)
        assert out.shape == (3, c, s, s) and out.abs().max() < 1
    with pytest.raises(ValueError):
        DeepTranslator(8, 6, downs=2)


def test_conditional_translator_takes_style_only_through_adain():
    torch.manual_seed(4)
    g = AdaINTranslator(8, 8, content_channels=16, width=8, style_width=8, style_hidden=16)
    content = torch.randn(2, 16, 4, 4)
    x1, x2 = torch.randn(2, 8, 8, 8), torch.randn(2, 8, 8, 8)
    out = g(x1, content)
    assert out.shape == (2, 8, 8, 8) and out.abs().max() < 1
    assert torch.allclose(out, g(x2, content))          # fresh: every AdaIN is a plain instance norm
    assert not torch.allclose(out, g(x1, torch.randn(2, 16, 4, 4)))
    with torch.no_grad():
        g.style[-1].weight.normal_(0, 0.5)
    assert not torch.allclose(g(x1, content), g(x2, content), atol=1e-4)   # now the style input modulates


def test_settings_reject_a_broken_cascade():
    with pytest.raises(ValueError, match="consecutive"):
        CascadeSettings(levels=(3, 1))
    with pytest.raises(ValueError, match="deepest first"):
        CascadeSettings(levels=(2, 3))
    assert CascadeSettings().to_dict()["levels"] == [3, 2]


# ---------------------------------------------------------------- losses and training of a level
def test_conditional_cycle_and_identity_use_the_deeper_levels():
    s = CascadeSettings(**TINY)
    pair = LevelPair(2, (8, 8, 8), (16, 4, 4), s)
    a = LevelData(torch.rand(4, 8, 8, 8) * 2 - 1, torch.rand(4, 16, 4, 4) * 2 - 1, torch.rand(4, 16, 4, 4) * 2 - 1)
    b = LevelData(torch.rand(4, 8, 8, 8) * 2 - 1, torch.rand(4, 16, 4, 4) * 2 - 1, torch.rand(4, 16, 4, 4) * 2 - 1)
    terms = translator_losses(pair, a, b, s)
    with torch.no_grad():
        fake_b = pair.to_b(a.x, a.translated)
        fake_a = pair.to_a(b.x, b.translated)
        cyc = ((pair.to_a(fake_b, a.own) - a.x).abs().mean() + (pair.to_b(fake_a, b.own) - b.x).abs().mean())
        idty = ((pair.to_a(a.x, a.own) - a.x).abs().mean() + (pair.to_b(b.x, b.own) - b.x).abs().mean())
    assert torch.allclose(terms["cyc"], cyc) and torch.allclose(terms["idty"], idty)
    assert torch.allclose(terms["total"], terms["adv"] + 100 * cyc + 100 * idty)
    with pytest.raises(ValueError, match="conditional"):
        train_level(pair, LevelData(a.x), LevelData(b.x), s, steps=1)


def test_training_a_level_lowers_the_identity_and_cycle_terms():
    torch.manual_seed(5)
    s = CascadeSettings(levels=(3,), **{**TINY, "lr": 1e-3})
    pair = LevelPair(3, (8, 4, 4), None, s)
    a = LevelData((0.4 + 0.2 * torch.randn(64, 8, 4, 4)).clamp(-1, 1))
    b = LevelData((-0.4 + 0.2 * torch.randn(64, 8, 4, 4)).clamp(-1, 1))
    h = train_level(pair, a, b, s, steps=60, seed=0)
    assert h.stopped == "step cap" and len(h.step) == 60
    first, last = np.mean(h.idty[:5]) + np.mean(h.cyc[:5]), np.mean(h.idty[-5:]) + np.mean(h.cyc[-5:])
    assert last < 0.8 * first, (first, last)


def test_no_adversarial_term_skips_the_critics():
    s = CascadeSettings(levels=(3,), **{**TINY, "lambda_adv": 0.0})
    pair = LevelPair(3, (8, 4, 4), None, s)
    before = [p.clone() for p in pair.critics()]
    train_level(pair, LevelData(torch.rand(20, 8, 4, 4)), LevelData(torch.rand(20, 8, 4, 4)), s, steps=3)
    assert all(torch.equal(p, q) for p, q in zip(before, pair.critics()))


# ---------------------------------------------------------------- inversion
def test_an_inverter_trained_a_few_steps_reconstructs_better(classifier, domains):
    images = domains[0].image
    feats = feature_levels(classifier, images, (2,))[2]
    torch.manual_seed(6)
    inv = Inverter(FeatureNormalizer.fit(feats), tuple(feats.shape[1:]), width=16)
    before = reconstruction_error(inv, feats, images)
    h = train_inverter(inv, classifier, 2, images, feats, steps=200, batch_size=16, lr=3e-3)
    after = reconstruction_error(inv, feats, images)
    assert len(h.loss) == 200 and after < 0.8 * before, (before, after)
    assert np.mean(h.loss[-20:]) < 0.5 * np.mean(h.loss[:5])
    assert inv(feats[:2]).shape == (2, 3, 32, 32)


def test_inverter_needs_a_power_of_two_upsampling():
    with pytest.raises(ValueError):
        Inverter(FeatureNormalizer(4), (4, 6, 6), image_size=32)


# ---------------------------------------------------------------- the counterfactual render
def test_counterfactual_changes_only_the_pixels_the_two_shapes_cover():
    w = make_world(300, seed=12, max_objects=3, n_captions=0)      # the other objects must stay as they are
    for target in ("circle", "square", "star"):
        image, labels, _ = counterfactual(w, target)
        union = primary_support(w) | primary_support(w, target)
        changed = (image != w.image).any(-1)
        assert changed.any() and not (changed & ~union).any()
        assert not ((labels != w.labels) & ~union).any()
        same = w.shape == SHAPES.index(target)
        assert np.array_equal(image[same], w.image[same]) and not changed[same].any()
        assert changed[~same].reshape((~same).sum(), -1).any(1).all()    # every other scene changes


def test_primary_support_covers_the_label_mask_and_the_rim():
    w = make_world(100, seed=13, n_captions=0)
    support = primary_support(w)
    assert (support >= (w.labels > 0)).all() and (support & (w.labels == 0)).any()


# ---------------------------------------------------------------- end to end
def test_tiny_cascade_trains_and_translates(classifier, domains):
    a, b = domains
    s = CascadeSettings(**TINY)
    cascade, log = fit_cascade(classifier, a.image, b.image, s, steps=4, inverter_steps=4, seed=0)
    assert set(log["levels"]) == {3, 2} and all(len(h.step) == 4 for h in log["levels"].values())
    assert isinstance(cascade.pairs["3"].to_b, DeepTranslator)
    assert isinstance(cascade.pairs["2"].to_b, AdaINTranslator)
    assert not any(p.requires_grad for p in cascade.parameters())     # every level frozen after its training
    for to, source in (("b", a), ("a", b)):
        out = cascade.translate(classifier, source.image[:7], to=to)
        assert out.shape == (7, 32, 32, 3) and out.dtype == np.uint8
    # the normalisers are the domains' own statistics
    fa = feature_levels(classifier, a.image, (2,))[2]
    assert torch.allclose(cascade.normalizers["a2"].mean, fa.mean((0, 2, 3)), atol=1e-5)
    # inference is the composition of Fig. 3
    feats = feature_levels(classifier, a.image[:3], (2, 3))
    norm = cascade.normalize(feats, "a")
    with torch.no_grad():
        b3 = cascade.pairs["3"].to_b(norm[3])
        b2 = cascade.pairs["2"].to_b(norm[2], b3)
        image = cascade.inverters["b"](cascade.normalizers["b2"].inverse(b2))
    assert np.abs(cascade.translate(classifier, a.image[:3]).astype(int)
                  - (image.permute(0, 2, 3, 1) * 255).round().numpy().astype(int)).max() <= 1


def test_single_level_and_three_level_cascades(classifier, domains):
    a, b = domains
    for levels in ((2,), (3, 2, 1)):
        cascade, _ = fit_cascade(classifier, a.image[:16], b.image[:16], CascadeSettings(levels=levels, **TINY),
                                 steps=1, inverter_steps=1)
        assert isinstance(cascade.pairs[str(levels[0])].to_b, DeepTranslator)
        assert cascade.translate(classifier, a.image[:2]).shape == (2, 32, 32, 3)
    assert isinstance(cascade, Cascade) and set(cascade.inverters["a"].normalizer.mean.shape) == {4}


def test_rows_can_share_a_trained_level_and_inverters(classifier, domains):
    a, b = domains
    f3, _ = fit_cascade(classifier, a.image[:16], b.image[:16], CascadeSettings(levels=(3,), **TINY), steps=2,
                        inverter_steps=1)
    f2, _ = fit_cascade(classifier, a.image[:16], b.image[:16], CascadeSettings(levels=(2,), **TINY), steps=1,
                        inverter_steps=2)
    both, log = fit_cascade(classifier, a.image[:16], b.image[:16], CascadeSettings(**TINY), steps=1,
                            pairs={3: f3.pairs["3"]}, inverters=dict(f2.inverters))
    assert log["levels"][3] is None and log["levels"][2] is not None and log["inverters"] == {"a": None, "b": None}
    for k, v in f3.pairs["3"].state_dict().items():
        assert torch.equal(both.pairs["3"].state_dict()[k], v)
    for k, v in f2.inverters["b"].state_dict().items():
        assert torch.equal(both.inverters["b"].state_dict()[k], v)
    with pytest.raises(ValueError, match="conditional"):          # an unconditional F2 pair cannot be the cascade's
        fit_cascade(classifier, a.image[:16], b.image[:16], CascadeSettings(**TINY), steps=1, inverter_steps=1,
                    pairs={2: f2.pairs["2"]})
