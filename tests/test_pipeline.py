"""The whole DVC pipeline on the smoke profile, in a fresh copy of the repository: `dvc repro` runs every stage
end to end, a second `dvc repro` does nothing, and changing a translator knob reruns only what is downstream."""
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


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


@pytest.fixture(scope="module")
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


def test_smoke_repro_runs_every_stage(smoke_repo):
    root, log = smoke_repo
    names = yaml.safe_load((root / "params.yaml").read_text())["experiments"]
    expected = ["prepare", "train_experts", "extract"] + [f"{s}@{n}" for s in ("train_translator", "evaluate")
                                                         for n in names]
    assert sorted(ran_stages(log)) == sorted(expected)
    experts = json.loads((root / "metrics" / "experts.json").read_text())
    assert {"world_vae", "oracle", "mnist_classifier"} <= set(experts)
    for name in names:
        metrics = json.loads((root / "metrics" / f"{name}.json").read_text())
        assert metrics["profile"] == "smoke" and metrics["layers"]
        report = json.loads((root / "reports" / f"{name}.ipynb").read_text())
        outputs = [o for c in report["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]
        assert not [o for o in outputs if o.get("output_type") == "error"]
        assert any("image/png" in o.get("data", {}) for o in outputs), "the report shows no figure"
        assert any("| layer | model |" in "".join(o.get("data", {}).get("text/markdown", "")) for o in outputs)
        pngs = list((root / "reports" / "figures" / name).glob("*.png"))
        assert pngs and all(p.stat().st_size > 1000 for p in pngs)
    assert not list(root.glob("reports/.*.tmp*")) and not list((root / "models").glob(".checkpoints/*/*"))


def test_second_repro_does_nothing(smoke_repo):
    root, _ = smoke_repo
    start = time.perf_counter()
    log = dvc("repro", cwd=root)
    print(f"\nsecond dvc repro: {time.perf_counter() - start:.1f} s")
    assert ran_stages(log) == [] and "Data and pipelines are up to date" in dvc("status", cwd=root)


def test_translator_knob_reruns_only_downstream(smoke_repo):
    root, _ = smoke_repo
    raw = yaml.safe_load((root / "params.yaml").read_text())
    name = raw["experiments"][0]
    raw["smoke"][name]["translator"]["train"]["steps"] += 1
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    status = json.loads(dvc("status", "--json", cwd=root).strip().splitlines()[-1])
    assert sorted(status) == [f"train_translator@{name}"]          # evaluate changes only when its inputs do
    assert sorted(ran_stages(dvc("repro", cwd=root))) == sorted([f"train_translator@{name}", f"evaluate@{name}"])
