"""Helpers the tests import: small translators, the parameters of a tiny pipeline, and running DVC in a repo copy.
(Fixtures live in tests/conftest.py; pytest finds them without an import.)"""
import os
import subprocess
import sys
from pathlib import Path

from ginn.translator import Translator

REPO = Path(__file__).resolve().parents[1]

# The parameters of a tiny embedded pipeline (two experts, a few scenes) and of one tiny experiment on it.
TINY = {
    "profile": "smoke", "experiments": [], "device": "cpu",
    "world": {"splits": {"train": 96, "val": 32, "test": 32}, "seeds": {"train": 0, "val": 1, "test": 2},
              "size": 32, "max_objects": 1, "n_captions": 1},
    "experts": {"roles": ["world_vae", "world_classifier"],
                "world_vae": {"epochs": 1, "latent_dim": 8, "width": 8},
                "world_classifier": {"epochs": 1, "width": 8, "hidden": 16}},
    "extract": {"batch_size": 64, "world": ["world_vae", "world_classifier:last", "world_classifier:early"],
                "mnist": []},
}
TRANSLATOR = {"dataset": "world", "target": "world_vae", "conditions": ["world_classifier:last"],
              "models": ["cinn"], "marginal": False, "seeds": [0],
              "cinn": {"n_flows": 2, "hidden_dim": 16, "embedding_dim": 8, "cond_hidden_dim": 16},
              "mlp": {"hidden_dim": 16, "depth": 2, "embedding_dim": 8, "cond_hidden_dim": 16},
              "train": {"steps": 6, "batch_size": 16, "ckpt_every": 2}}


SMALL = dict(n_flows=4, hidden_dim=32, hidden_depth=1, embedding_dim=8, cond_hidden_dim=16, cond_depth=1)


def small_translator(dim=5, cond_dim=3, **kw):
    return Translator(dim=dim, cond_dim=cond_dim, **{**SMALL, **kw})


def run(cmd, cwd, **kw):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, **kw)
    if proc.returncode:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc.stdout + proc.stderr


def dvc(*args, cwd):
    return run([sys.executable, "-m", "dvc", *args], cwd)


def ran_stages(log: str) -> list[str]:
    return [line.split("'")[1] for line in log.splitlines() if line.startswith("Running stage")]


