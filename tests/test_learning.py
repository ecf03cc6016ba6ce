"""τ learns conditionals with known answers; the MLP ablation collapses to the mean."""
import numpy as np
import pytest
import torch

from ginn.metrics import conditional_nll
from ginn.train import bimodal, bimodal_modes, fit
from ginn.translator import MLPTranslator, Translator


def test_linear_gaussian_nll_reaches_the_analytic_entropy(linear_gaussian_model):
    tau, test = linear_gaussian_model
    nll = conditional_nll(tau, test["z_theta"], test["z_phi"])["nats"]
    gap_per_dim = (nll - test["conditional_entropy"]) / 4
    assert -0.02 < gap_per_dim < 0.05, f"held-out NLL {nll:.4f} vs entropy {test['conditional_entropy']:.4f}"


def test_linear_gaussian_samples_match_mean_and_covariance(linear_gaussian_model):
    tau, test = linear_gaussian_model
    A, cov = test["A"], test["L"] @ test["L"].T
    sd = np.sqrt(np.diag(cov))
    for z_phi in [np.zeros(3), np.array([1.0, -0.5, 0.8]), np.array([-1.2, 0.3, 0.5])]:
        with torch.no_grad():
            s = tau.sample(torch.tensor(z_phi, dtype=torch.float32)[None], n=8000,
                           generator=torch.Generator().manual_seed(0))[0].numpy()
        mean_error = np.abs(s.mean(0) - A @ z_phi) / sd          # in units of the true conditional std
        cov_error = np.linalg.norm(np.cov(s.T) - cov) / np.linalg.norm(cov)
        assert mean_error.max() < 0.2, f"sample mean off by {mean_error.round(3)} std at z_phi={z_phi}"
        assert cov_error < 0.2, f"sample covariance off by {cov_error:.3f} (relative Frobenius) at z_phi={z_phi}"


@pytest.fixture(scope="module")
def bimodal_models():
    data = bimodal(4096)
    tau = Translator(dim=2, cond_dim=2, n_flows=8, hidden_dim=64, hidden_depth=1, embedding_dim=16,
                     cond_hidden_dim=32, cond_depth=1)
    fit(tau, data["z_theta"], data["z_phi"], steps=2000, batch_size=128, lr=1e-3, progress=False)
    mlp = MLPTranslator(dim=2, cond_dim=2, hidden_dim=64, depth=4, embedding_dim=16, cond_hidden_dim=32, cond_depth=1)
    fit(mlp, data["z_theta"], data["z_phi"], steps=1000, batch_size=128, lr=1e-3, progress=False)
    return tau, mlp


def test_cinn_covers_both_modes_and_mlp_predicts_the_mean(bimodal_models):
    tau, mlp = bimodal_models
    conds = np.random.default_rng(5).normal(size=(8, 2)).astype(np.float32)
    modes = bimodal_modes(conds)
    with torch.no_grad():
        samples = tau.sample(torch.from_numpy(conds), n=400, generator=torch.Generator().manual_seed(1)).numpy()
        pred = mlp.predict(torch.from_numpy(conds)).numpy()
    for s, f, p in zip(samples, modes, pred):
        near_plus = np.linalg.norm(s - f, axis=1) < 0.5
        near_minus = np.linalg.norm(s + f, axis=1) < 0.5
        assert near_plus.mean() + near_minus.mean() > 0.85, "samples fall between the modes"
        assert 0.3 < near_plus.mean() / (near_plus.mean() + near_minus.mean()) < 0.7, "one mode is missing"
        assert np.linalg.norm(p) < 0.3 * np.linalg.norm(f), "the MLP should predict the mean of ±f"
