"""ginn.metrics: Fréchet distance (direct and through torchmetrics' FID), diversity, accuracy, IoU, preservation,
conditional NLL, mutual information, spread and bootstrap intervals."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from ginn.experts.embedded import to_input
from ginn.metrics import (OracleFeatures, attribute_accuracy, bootstrap_ci, conditional_nll, diversity,
                          fid_in_feature_space, frechet_distance, mask_iou, mutual_information, preservation_rate,
                          spread)
from ginn.translator import MLPTranslator, Translator

scipy_linalg = pytest.importorskip("scipy.linalg")


def exact_moments(n, mean, cov, seed=0):
    """n rows whose sample mean is exactly `mean` and sample covariance (ddof=1) exactly `cov`."""
    x = np.random.default_rng(seed).normal(size=(n, len(mean)))
    x -= x.mean(0)
    x = x @ np.linalg.inv(np.linalg.cholesky(np.cov(x.T))).T
    return x @ np.linalg.cholesky(cov).T + mean


def closed_form_fd(mu1, s1, mu2, s2):
    """‖μ1−μ2‖² + Tr(Σ1 + Σ2 − 2 (Σ1 Σ2)^½), with scipy's matrix square root (independent of torchmetrics)."""
    root = scipy_linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * root))


def random_spd(d, seed):
    a = np.random.default_rng(seed).normal(size=(d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


# ---------------------------------------------------------------- Fréchet distance
def test_fd_of_identical_sets_is_zero_even_far_from_the_origin():
    x = np.random.default_rng(0).normal(size=(500, 32)) * 3 + 1000.0
    scale = np.trace(np.cov(x.T))
    assert abs(frechet_distance(x, x)) < 1e-6 * scale
    assert abs(frechet_distance(torch.from_numpy(x).float(), torch.from_numpy(x).float())) < 1e-6 * scale


def test_fd_matches_the_closed_form_of_two_known_gaussians():
    d = 6
    mu1, mu2 = np.linspace(-1, 1, d), np.zeros(d)
    s1, s2 = random_spd(d, 1), random_spd(d, 2)
    x, y = exact_moments(3000, mu1, s1, seed=3), exact_moments(2000, mu2, s2, seed=4)
    expected = closed_form_fd(mu1, s1, mu2, s2)
    assert expected > 1.0
    assert frechet_distance(x, y) == pytest.approx(expected, rel=1e-6)
    assert frechet_distance(y, x) == pytest.approx(expected, rel=1e-6)


def test_fd_of_diagonal_gaussians_sampled_matches_the_elementwise_formula():
    r = np.random.default_rng(5)
    s1, s2, mu = np.array([0.5, 1.0, 2.0]), np.array([1.0, 1.0, 0.5]), np.array([1.0, -2.0, 0.0])
    x, y = r.normal(size=(200_000, 3)) * s1 + mu, r.normal(size=(200_000, 3)) * s2
    expected = (mu ** 2).sum() + ((s1 - s2) ** 2).sum()
    assert frechet_distance(x, y) == pytest.approx(expected, rel=0.01)


def test_shifting_one_set_by_c_adds_its_squared_norm():
    r = np.random.default_rng(6)
    x, y = r.normal(size=(400, 5)), r.normal(size=(300, 5)) * 1.5
    y = y - y.mean(0) + x.mean(0)                          # equal means: the shift is the only mean difference
    c = np.array([0.3, -1.0, 2.0, 0.0, 0.5])
    assert frechet_distance(x, y + c) == pytest.approx(frechet_distance(x, y) + c @ c, rel=1e-9)
    assert frechet_distance(x, x + c) == pytest.approx(c @ c, rel=1e-9)


def test_fd_rejects_bad_inputs_with_informative_messages():
    x = np.random.default_rng(0).normal(size=(10, 4))
    with pytest.raises(ValueError, match="4 dimensions but fake_features 3"):
        frechet_distance(x, x[:, :3])
    with pytest.raises(ValueError, match="at least 2"):
        frechet_distance(x, x[:1])
    bad = x.copy()
    bad[7, 2] = np.nan
    with pytest.raises(ValueError, match="NaN or inf .first in row 7"):
        frechet_distance(x, bad)
    with pytest.raises(ValueError, match=r"2-d \(n, d\)"):
        frechet_distance(x, x.reshape(10, 2, 2))
    with pytest.raises(TypeError, match="numpy array or a torch tensor"):
        frechet_distance(x, "features")


# ---------------------------------------------------------------- FD through torchmetrics' FrechetInceptionDistance
def small_feature_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.Tanh(), nn.AvgPool2d(2), nn.Flatten(),
                         nn.Linear(6 * 4 * 4, 5))


def two_image_sets():
    r = np.random.default_rng(7)
    real = r.integers(0, 256, size=(90, 8, 8, 3), dtype=np.uint8)
    fake = (r.random(size=(70, 8, 8, 3)) ** 2 * 160).astype(np.uint8)        # darker: a different distribution
    return real, fake


def test_image_route_equals_frechet_distance_of_direct_features():
    net, (real, fake) = small_feature_net(), two_image_sets()
    with torch.no_grad():
        direct = frechet_distance(net(to_input(real)), net(to_input(fake)))
    assert direct > 0.01
    assert fid_in_feature_space(net, real, fake, batch_size=32) == pytest.approx(direct, rel=1e-6)
    # float (n, 3, H, W) images in [0, 1] are the same images; the batch size does not matter
    assert fid_in_feature_space(net, to_input(real), to_input(fake), batch_size=1000) == pytest.approx(direct, rel=1e-6)
    assert net.training                                      # the module's mode is restored


class FakeOracle:
    """Duck-typed oracle: features are a fixed linear map of the flattened images."""
    feature_dim = 4

    def __init__(self):
        self.w = torch.randn(3 * 8 * 8, 4, generator=torch.Generator().manual_seed(1))
        self.calls = []

    def features(self, images):
        x = to_input(images)
        self.calls.append(len(x))
        return x.flatten(1) @ self.w


def test_oracle_route_uses_oracle_features_and_matches_direct_fd():
    oracle, (real, fake) = FakeOracle(), two_image_sets()
    direct = frechet_distance(oracle.features(real), oracle.features(fake))
    oracle.calls.clear()
    assert fid_in_feature_space(oracle, real, fake, batch_size=40) == pytest.approx(direct, rel=1e-6)
    assert oracle.calls == [40, 40, 10, 40, 30]              # batched; no dummy 299x299 probe image
    module = OracleFeatures(oracle)
    assert module.num_features == 4
    assert module(to_input(real[:3])).dtype == torch.float64


def test_image_route_with_the_real_oracle_class():
    from ginn.experts.embedded import ConvClassifier, ConvSegmenter, Oracle
    torch.manual_seed(0)
    oracle = Oracle(ConvClassifier("c", size=8, width=4, hidden=8), ConvSegmenter("s", size=8, width=4, tap_size=4))
    real, fake = two_image_sets()
    direct = frechet_distance(oracle.features(real), oracle.features(fake))
    assert fid_in_feature_space(oracle, real, fake) == pytest.approx(direct, rel=1e-6, abs=1e-12)


def test_image_route_rejects_bad_images():
    net, (real, fake) = small_feature_net(), two_image_sets()
    with pytest.raises(ValueError, match="at least 2 images"):
        fid_in_feature_space(net, real, fake[:1])
    with pytest.raises(ValueError, match="differ in layout"):
        fid_in_feature_space(net, real, fake[:, :4, :4])
    bad = to_input(fake).clone()
    bad[5, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        fid_in_feature_space(net, to_input(real), bad)
    with pytest.raises(ValueError, match=r"must return \(n, d\)"):
        fid_in_feature_space(nn.Flatten(0), real, fake)
    with pytest.raises(TypeError, match="Oracle or an nn.Module"):
        fid_in_feature_space(lambda x: x, real, fake)


# ---------------------------------------------------------------- diversity
def test_diversity_of_identical_samples_is_zero():
    x = np.tile(np.random.default_rng(0).normal(size=(7, 1, 12)), (1, 40, 1))   # 40 copies per condition
    assert diversity(x) == 0.0


def test_diversity_of_simplex_vertices_is_the_edge_length():
    edge = 3.0
    simplex = np.eye(6) * edge / math.sqrt(2)                # 6 points, all pairwise distances = edge
    rot, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(6, 6)))
    x = np.stack([simplex @ rot + 10, simplex, simplex[::-1] - 4])
    assert diversity(x) == pytest.approx(edge, rel=1e-12)
    # the mean over conditions: a second set of conditions with edge 1 halves towards (3 + 1) / 2
    assert diversity(np.concatenate([x[:1], simplex[None] / edge])) == pytest.approx((edge + 1) / 2, rel=1e-12)


def test_diversity_rejects_bad_inputs():
    with pytest.raises(ValueError, match="at least 2 samples"):
        diversity(np.zeros((3, 1, 4)))
    with pytest.raises(ValueError, match=r"features\[None\]"):
        diversity(np.zeros((5, 4)))
    x = np.zeros((2, 3, 4))
    x[1, 2, 0] = np.inf
    with pytest.raises(ValueError, match="NaN or inf"):
        diversity(x)


# ---------------------------------------------------------------- attribute accuracy, mask IoU, preservation
def test_attribute_accuracy_perfect_and_chance():
    r = np.random.default_rng(0)
    n, k = 40_000, 4
    target = {"shape": np.repeat(np.arange(k), n // k), "colour": r.integers(0, 8, n)}
    assert attribute_accuracy(target, target) == {"shape": 1.0, "colour": 1.0}
    shuffled = {"shape": torch.from_numpy(r.permutation(target["shape"]))}
    acc = attribute_accuracy(shuffled, target)
    assert list(acc) == ["shape"]                            # only heads present in both
    assert acc["shape"] == pytest.approx(1 / k, abs=0.01)    # sd of chance accuracy here is 0.002


def test_attribute_accuracy_rejects_bad_inputs():
    with pytest.raises(ValueError, match="shape"):
        attribute_accuracy({"a": [0, 1, 2]}, {"a": [0, 1]})
    with pytest.raises(ValueError, match="no head in common"):
        attribute_accuracy({"a": [0]}, {"b": [0]})
    with pytest.raises(ValueError, match="argmax"):
        attribute_accuracy({"a": np.zeros((3, 4))}, {"a": [0, 1, 2]})
    with pytest.raises(ValueError, match="NaN"):
        attribute_accuracy({"a": [0.0, np.nan]}, {"a": [0, 1]})


def test_mask_iou_identical_disjoint_and_by_hand():
    maps = np.random.default_rng(0).integers(0, 5, size=(4, 6, 6))
    assert mask_iou(maps, maps, n_classes=5) == 1.0
    a, b = np.zeros((2, 3, 3), np.int64), np.ones((2, 3, 3), np.int64)
    assert mask_iou(a, b, n_classes=2) == 0.0
    # class 0: pred {0,1}, target {0} -> 1/2; class 1: pred {2,3}, target {1,2,3} -> 2/3; class 2: absent, left out
    p, t = np.array([[0, 0, 1, 1]]), np.array([[0, 1, 1, 1]])
    assert mask_iou(p, t, n_classes=3) == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert mask_iou(p, t, n_classes=3, ignore_background=True) == pytest.approx(2 / 3)
    assert math.isnan(mask_iou(np.zeros((1, 2)), np.zeros((1, 2)), n_classes=2, ignore_background=True))


def test_mask_iou_rejects_bad_inputs():
    with pytest.raises(ValueError, match="n_classes=3 allows 0..2"):
        mask_iou(np.array([[0, 3]]), np.array([[0, 1]]), n_classes=3)
    with pytest.raises(ValueError, match="shape"):
        mask_iou(np.zeros((2, 4, 4)), np.zeros((2, 4, 3)), n_classes=2)
    with pytest.raises(ValueError, match="integer class labels"):
        mask_iou(np.array([[0.5, 1.0]]), np.array([[0, 1]]), n_classes=2)


def test_preservation_rate_by_hand():
    before = {"shape": [0, 1, 2, 3, 4], "colour": [0, 0, 0, 0, 0], "size": [1, 1, 1, 1, 1]}
    after = {"shape": [0, 1, 2, 0, 4], "colour": [5, 5, 5, 5, 5], "size": [1, 2, 1, 1, 1], "extra": [9] * 5}
    assert preservation_rate(before, after, "colour") == pytest.approx(3 / 5)      # rows 1 and 3 changed
    assert preservation_rate(before, after, ["colour", "size"]) == pytest.approx(4 / 5)
    assert preservation_rate(before, before, "colour") == 1.0
    with pytest.raises(ValueError, match="not in both"):
        preservation_rate(before, after, "colour_typo")
    with pytest.raises(ValueError, match="nothing to preserve"):
        preservation_rate({"a": [0]}, {"a": [1]}, "a")
    with pytest.raises(ValueError, match="shape"):
        preservation_rate({"a": [0], "b": [1, 2]}, {"a": [0], "b": [1]}, "a")


# ---------------------------------------------------------------- conditional NLL and mutual information
class ExactGaussian(nn.Module):
    """The true density of z_Θ = A z_Φ + σ ε given z_Φ (conditional) or alone (marginal)."""

    def __init__(self, A, sigma, conditional):
        super().__init__()
        self.A, self.sigma, self.conditional = A, sigma, conditional
        self.seen_grad = []

    def nll(self, z_theta, z_phi):
        self.seen_grad.append(torch.is_grad_enabled())
        d = self.A.shape[0]
        mean = z_phi.double() @ self.A.T if self.conditional else torch.zeros(d, dtype=torch.float64)
        cov = self.sigma ** 2 * torch.eye(d, dtype=torch.float64) + (0 if self.conditional else self.A @ self.A.T)
        return -torch.distributions.MultivariateNormal(mean, cov).log_prob(z_theta.double())


def test_mutual_information_of_a_linear_gaussian_pair():
    g = torch.Generator().manual_seed(0)
    A, sigma = torch.randn(4, 3, generator=g, dtype=torch.float64), 0.7
    analytic = 0.5 * torch.logdet(torch.eye(4, dtype=torch.float64) + A @ A.T / sigma ** 2).item()
    # analytic entropies: H(z_Θ) = ½ log det(2πe (AAᵀ + σ²I)), H(z_Θ|z_Φ) = ½ log det(2πe σ² I)
    h_marginal = 0.5 * torch.logdet(2 * math.pi * math.e * (A @ A.T + sigma ** 2 * torch.eye(4, dtype=torch.float64)))
    h_conditional = 0.5 * 4 * math.log(2 * math.pi * math.e * sigma ** 2)
    assert mutual_information(h_marginal.item(), h_conditional) == pytest.approx(analytic, rel=1e-9)
    # and from held-out NLLs of exact density models (no KL gap): equal up to Monte Carlo error
    z_phi = torch.randn(40_000, 3, generator=g, dtype=torch.float64)
    z_theta = z_phi @ A.T + sigma * torch.randn(40_000, 4, generator=g, dtype=torch.float64)
    marginal = conditional_nll(ExactGaussian(A, sigma, False), z_theta, z_phi, batch_size=5000)
    conditional = conditional_nll(ExactGaussian(A, sigma, True), z_theta, z_phi, batch_size=5000)
    assert marginal["nats"] == pytest.approx(h_marginal.item(), abs=0.03)
    assert conditional["nats"] == pytest.approx(h_conditional, abs=0.03)
    assert mutual_information(marginal, conditional) == pytest.approx(analytic, abs=0.03)
    with pytest.raises(ValueError, match="must be finite"):
        mutual_information(float("nan"), 1.0)


@pytest.mark.parametrize("cls", [Translator, MLPTranslator])
def test_conditional_nll_is_the_batched_mean_of_model_nll(cls):
    kw = dict(dim=4, cond_dim=3, embedding_dim=8, cond_hidden_dim=8, cond_depth=1)
    model = cls(**kw, **(dict(n_flows=2, hidden_dim=8, hidden_depth=1) if cls is Translator else dict(hidden_dim=8, depth=2)))
    g = torch.Generator().manual_seed(0)
    z_theta, z_phi = torch.randn(300, 4, generator=g), torch.randn(300, 3, generator=g)
    model.train()
    out = conditional_nll(model, z_theta.numpy(), z_phi.numpy(), batch_size=64)
    assert model.training                                    # mode restored
    model.eval()
    with torch.no_grad():
        direct = model.nll(z_theta, z_phi).double().mean().item()
        bpd = model.bits_per_dim(z_theta, z_phi).double().mean().item()
    assert out["n"] == 300
    assert out["nats"] == pytest.approx(direct, rel=1e-5)
    assert out["bits_per_dim"] == pytest.approx(bpd, rel=1e-5)
    assert conditional_nll(model, z_theta, z_phi, batch_size=7)["nats"] == pytest.approx(direct, rel=1e-5)


def test_conditional_nll_runs_without_gradients_and_checks_inputs():
    model = ExactGaussian(torch.eye(2, dtype=torch.float64), 1.0, True)
    conditional_nll(model, np.zeros((10, 2)), np.zeros((10, 2)), batch_size=4)
    assert model.seen_grad == [False, False, False]
    with pytest.raises(ValueError, match="10 rows but z_phi has 9"):
        conditional_nll(model, np.zeros((10, 2)), np.zeros((9, 2)))
    with pytest.raises(TypeError, match="nll"):
        conditional_nll(object(), np.zeros((10, 2)), np.zeros((10, 2)))


# ---------------------------------------------------------------- spread and bootstrap
def test_spread():
    out = spread([1.0, 2.0, 4.0])
    assert out["n"] == 3 and out["mean"] == pytest.approx(7 / 3)
    assert out["std"] == pytest.approx(np.std([1.0, 2.0, 4.0], ddof=1))
    one = spread(torch.tensor([0.5]))
    assert one["mean"] == 0.5 and math.isnan(one["std"]) and one["n"] == 1
    with pytest.raises(ValueError, match="at least 1"):
        spread([])
    with pytest.raises(ValueError, match="NaN"):
        spread([1.0, float("nan")])


def test_bootstrap_ci_covers_the_mean_with_the_normal_width():
    v = np.random.default_rng(0).normal(loc=2.0, scale=3.0, size=4000)
    low, high = bootstrap_ci(v, n_boot=2000, seed=1)
    half = 1.96 * v.std(ddof=1) / math.sqrt(len(v))
    assert low < v.mean() < high
    assert (high - low) / 2 == pytest.approx(half, rel=0.1)
    assert bootstrap_ci(v, n_boot=200, seed=3) == bootstrap_ci(v, n_boot=200, seed=3)   # seeded
    narrow = bootstrap_ci(v, n_boot=2000, seed=1, level=0.5)
    assert low < narrow[0] < narrow[1] < high
    with pytest.raises(ValueError, match="level"):
        bootstrap_ci(v, level=95)
    with pytest.raises(ValueError, match="at least 2"):
        bootstrap_ci([1.0])
