"""The same inputs give the same bits: an expert trained twice, a translator run trained twice, a report executed
twice. Each training runs in a fresh process (as each `dvc repro` stage does), so no state carries over."""
import hashlib
import json
import sys
import textwrap

import pytest

from helpers import REPO, TINY, TRANSLATOR, run

TRAIN_EXPERT = """
import sys
from ginn.pipeline import deterministic
from ginn.experts.embedded import save_expert, train_world_vae, train_world_classifier
from ginn.world import make_world
deterministic(2)
world = make_world(96, seed=0)
trainer = {"vae": lambda: train_world_vae(world, latent_dim=8, width=8, epochs=1, batch_size=16, progress=False),
           "classifier": lambda: train_world_classifier(world, width=8, hidden=16, epochs=1, batch_size=16,
                                                        progress=False)}[sys.argv[1]]
save_expert(trainer(), sys.argv[2])
"""


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("expert", ["vae", "classifier"])
def test_an_expert_trained_twice_is_the_same_file(expert, tmp_path):
    script = tmp_path / "train.py"
    script.write_text(TRAIN_EXPERT)
    files = [tmp_path / f"{expert}{i}.safetensors" for i in range(2)]
    for path in files:
        run([sys.executable, str(script), expert, str(path)], cwd=REPO)
    assert _sha(files[0]) == _sha(files[1]), "retraining the expert changed its file: weights or header differ"


TRAIN_RUN = """
import json, sys
from pathlib import Path
from ginn.config import Layout
from ginn.pipeline import deterministic, prepare, stage_extract, stage_train_experts, stage_train_translator
deterministic(2)
params, lay = json.loads(Path(sys.argv[1]).read_text()), Layout(sys.argv[2])
prepare(params, lay, progress=False)
stage_train_experts(params, lay, progress=False)
stage_extract(params, lay, progress=False)
stage_train_translator(params, lay, "toy", progress=False)
"""


def test_the_stages_give_the_same_bytes_twice(tmp_path):
    """Data, experts, features, translators, training summary and curves: every file two runs write is identical
    (what makes `dvc.lock` reproducible), including the curves of an early-stopped run."""
    tr = {**TRANSLATOR, "models": ["cinn", "mlp"],
          "train": {"steps": 40, "batch_size": 16, "lr": 2e-3, "warmup": 4, "val_every": 4, "patience": 2,
                    "cuts": 1, "ckpt_every": 8}}
    params = {**TINY, "experiments": ["toy"], "toy": {"translator": tr, "evaluate": {}}}
    (tmp_path / "params.json").write_text(json.dumps(params))
    (tmp_path / "run.py").write_text(textwrap.dedent(TRAIN_RUN))
    trees = []
    for i in range(2):
        root = tmp_path / f"repo{i}"
        run([sys.executable, str(tmp_path / "run.py"), str(tmp_path / "params.json"), str(root)], cwd=REPO)
        trees.append({str(p.relative_to(root)): _sha(p) for p in sorted(root.rglob("*")) if p.is_file()})
    assert any("curves" in name for name in trees[0]) and any("translators" in name for name in trees[0])
    differ = sorted(k for k in trees[0] if trees[0][k] != trees[1].get(k))
    assert trees[0].keys() == trees[1].keys() and not differ, f"files that differ between two runs: {differ}"


def test_deterministic_sets_the_flag_and_the_threads_in_a_fresh_process(tmp_path):
    script = tmp_path / "flag.py"
    script.write_text("import torch\nfrom ginn.pipeline import deterministic\nassert not torch.are_deterministic_algorithms_enabled()\n"
                      "deterministic(1)\nprint(torch.are_deterministic_algorithms_enabled(), "
                      "torch.is_deterministic_algorithms_warn_only_enabled(), torch.get_num_threads())\n")
    out = run([sys.executable, str(script)], cwd=REPO)
    assert out.split()[-3:] == ["True", "True", "1"]
