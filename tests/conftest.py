"""Shared fixtures: one model trained on the linear-Gaussian toy, and the smoke pipeline run. What tests import
(small translators, the tiny pipeline parameters, running DVC) lives in tests/helpers.py."""
import shutil
import socket
import subprocess
import time

import pytest
import torch
from helpers import REPO, dvc, run

from ginn.train import fit, linear_gaussian
from ginn.translator import Translator


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


@pytest.fixture(scope="module")
def one_thread():
    "Tiny models on 2 shared cores: one intra-op thread avoids oversubscription (it is 10-100x faster here)."
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def no_network(monkeypatch):
    "Every socket use is recorded and refused: the returned list holds the attempts."
    attempts = []

    def refuse(*args, **kw):
        attempts.append(args)
        raise OSError("network access blocked by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return attempts


# ---------------------------------------------------------------- the smoke pipeline, run once per test session
# tests/test_pipeline.py checks the pipeline itself, tests/test_docs.py the documentation site its `docs` stage builds.
@pytest.fixture(scope="session")
def smoke_repo(tmp_path_factory):
    "A copy of the repository's files (what a clone would hold) with `profile: smoke`, as its own git repo."
    dst = tmp_path_factory.mktemp("smoke") / "ginn"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.split("\n")
    for name in filter(None, files):
        src = REPO / name
        if src.is_file():
            (dst / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / name)
    params = (dst / "params.yaml").read_text()
    assert "\nprofile: default\n" in params
    (dst / "params.yaml").write_text(params.replace("\nprofile: default\n", "\nprofile: smoke\n"))
    for f in ("dvc.lock",):
        (dst / f).unlink(missing_ok=True)
    for d in ("metrics",):
        shutil.rmtree(dst / d, ignore_errors=True)
    run(["git", "init", "-q"], dst)
    run(["git", "add", "-A"], dst)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "smoke"], dst)
    start = time.perf_counter()
    log = dvc("repro", cwd=dst)
    print(f"\nsmoke dvc repro: {time.perf_counter() - start:.1f} s")
    return dst, log
