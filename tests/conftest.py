"""Shared fixtures: small translators and one model trained on the linear-Gaussian toy."""
import pytest
import torch

from ginn.train import fit, linear_gaussian
from ginn.translator import Translator

SMALL = dict(n_flows=4, hidden_dim=32, hidden_depth=1, embedding_dim=8, cond_hidden_dim=16, cond_depth=1)


def small_translator(dim=5, cond_dim=3, **kw):
    return Translator(dim=dim, cond_dim=cond_dim, **{**SMALL, **kw})


@pytest.fixture(scope="session")
def linear_gaussian_model():
    """A translator trained to convergence on z_Θ = A z_Φ + L ε (about a minute on 2 cores)."""
    train, test = linear_gaussian(16384, seed=0), linear_gaussian(4096, seed=1)
    tau = Translator(dim=4, cond_dim=3, n_flows=6, hidden_dim=64, hidden_depth=1, embedding_dim=16,
                     cond_hidden_dim=32, cond_depth=1)
    fit(tau, train["z_theta"], train["z_phi"], steps=1500, batch_size=256, lr=2e-3, progress=False)
    # a short second phase at a lower rate and a larger batch removes most of the optimiser noise
    fit(tau, train["z_theta"], train["z_phi"], steps=400, batch_size=1024, lr=2e-4, progress=False)
    return tau.eval(), test
