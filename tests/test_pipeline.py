"""The whole DVC pipeline on the smoke profile, in a fresh copy of the repository: `dvc repro` runs every stage
end to end, a second `dvc repro` does nothing, and changing a translator knob reruns only what is downstream."""
import json
import re
import time

import yaml

# `smoke_repo` (one `dvc repro` of the smoke profile per test session, shared with tests/test_docs.py) and the
# helpers below live in tests/conftest.py and tests/helpers.py.
from helpers import dvc, ran_stages


def test_smoke_repro_runs_every_stage(smoke_repo):
    root, log = smoke_repo
    names = yaml.safe_load((root / "params.yaml").read_text())["experiments"]
    expected = ["prepare", "train_experts", "extract"] + [f"{s}@{n}" for s in ("train_translator", "evaluate")
                                                         for n in names] + ["results", "docs"]
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
        tables = ["".join(o.get("data", {}).get("text/markdown", "")) for o in outputs]
        assert any(re.search(r"^\|( [^|]+ \|)? model \|", t, re.M) for t in tables), "the report shows no metrics table"
        pngs = list((root / "reports" / "figures" / name).glob("*.png"))
        assert pngs and all(p.stat().st_size > 1000 for p in pngs)
    assert not list(root.glob("reports/.*.tmp*")) and not list((root / "models").glob(".checkpoints/*/*"))


def test_second_repro_does_nothing(smoke_repo):
    root, _ = smoke_repo
    start = time.perf_counter()
    log = dvc("repro", cwd=root)
    print(f"\nsecond dvc repro: {time.perf_counter() - start:.1f} s")
    assert ran_stages(log) == [] and "Data and pipelines are up to date" in dvc("status", "dvc.yaml", cwd=root)


def test_translator_knob_reruns_only_downstream(smoke_repo):
    root, _ = smoke_repo
    # a JSON round trip gives every experiment its own dicts: params.yaml merges shared anchors, and PyYAML loads an
    # alias as one object shared by every experiment that names it (editing it in place would edit them all)
    raw = json.loads(json.dumps(yaml.safe_load((root / "params.yaml").read_text())))
    name = raw["experiments"][0]
    raw["smoke"][name]["translator"]["train"]["steps"] += 1
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    status = json.loads(dvc("status", "dvc.yaml", "--json", cwd=root).strip().splitlines()[-1])
    assert sorted(status) == [f"train_translator@{name}"]          # evaluate changes only when its inputs do
    assert sorted(ran_stages(dvc("repro", cwd=root))) == sorted([f"train_translator@{name}", f"evaluate@{name}", "results", "docs"])


def test_editing_library_code_makes_its_stages_stale(smoke_repo):
    "Every stage depends on the code it runs: an edit to a function `extract` calls marks extract and all after it."
    root, _ = smoke_repo
    world = root / "ginn" / "world.py"
    source = world.read_text()
    marker = "def derived_input("
    assert marker in source
    try:
        world.write_text(source.replace(marker, "def derived_input(  # edited", 1))
        stale = set(json.loads(dvc("status", "dvc.yaml", "--json", cwd=root).strip().splitlines()[-1]))
    finally:
        world.write_text(source)
    names = yaml.safe_load((root / "params.yaml").read_text())["experiments"]
    downstream = {"extract", "results", "docs"} | {f"{s}@{n}" for s in ("train_translator", "evaluate") for n in names}
    assert downstream <= stale, sorted(downstream - stale)
    assert "Data and pipelines are up to date" in dvc("status", "dvc.yaml", cwd=root)
