"""README.md agrees with the code it describes: the pipeline line and the stage table list every stage of dvc.yaml,
the experiment table every experiment of params.yaml, the notebook table every notebook that exports a module, and
every notebook path and `ginn.…` module that README.md or the site's index names exists. Fast: files only."""
import json
import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DEFAULT_EXP = re.compile(r"^\s*#\s*\|\s*default_exp\s+(\S+)", re.M)     # nbdev's own pattern (nbdev.processors)


def readme() -> str:
    return README.read_text(encoding="utf-8")


def table(text: str, header: list[str]) -> list[list[str]]:
    """The rows of the Markdown table whose header row starts with the cells `header`, each as its stripped cells
    (a `\\|` inside a cell stays in the cell)."""
    lines = text.splitlines()

    def cells(line):
        return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]

    for i, line in enumerate(lines):
        if line.startswith("|") and cells(line)[:len(header)] == header:
            rows = []
            for row in lines[i + 2:]:                   # after the header and its |---| line
                if not row.startswith("|"):
                    break
                rows.append(cells(row))
            return rows
    pytest.fail(f"README.md has no table with the header {header}")


def code(cell: str) -> str:
    "The text of the first `code` span of a table cell."
    m = re.search(r"`([^`]+)`", cell)
    return m.group(1) if m else cell


def stages() -> list[str]:
    "dvc.yaml's stages in order, a `foreach` stage as `name@NAME` (one per experiment)."
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    return [f"{name}@NAME" if "foreach" in stage else name for name, stage in spec.items()]


def experiments() -> list[str]:
    return yaml.safe_load((REPO / "params.yaml").read_text())["experiments"]


def exported_modules() -> dict[str, str]:
    """`nbs/…ipynb` -> `ginn.module` for every notebook with a `#| default_exp`, private modules (`_name`) aside:
    they are not part of the documented API."""
    found = {}
    for path in sorted((REPO / "nbs").rglob("*.ipynb")):
        if ".ipynb_checkpoints" in path.parts:
            continue
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        sources = ["".join(c["source"]) if isinstance(c["source"], list) else c["source"]
                   for c in cells if c["cell_type"] == "code"]
        m = next(filter(None, map(DEFAULT_EXP.search, sources)), None)
        if m and not m.group(1).split(".")[-1].startswith("_"):
            found[str(path.relative_to(REPO))] = f"ginn.{m.group(1)}"
    return found


def test_pipeline_line_lists_every_stage():
    lines = [line for line in readme().split("## The pipeline", 1)[1].splitlines() if "→" in line]
    assert lines, "README.md's 'The pipeline' section has no `a → b → …` line"
    assert [s.strip() for s in lines[0].split("→")] == stages(), "README.md's pipeline line is not dvc.yaml's stages"


def test_stage_table_lists_every_stage():
    rows = table(readme(), ["stage", "writes"])
    assert [code(r[0]) for r in rows] == stages(), "README.md's stage table is not dvc.yaml's stages, in order"
    assert all(r[1] for r in rows)


def test_experiment_table_lists_every_experiment():
    rows = table(readme(), ["name", "paper", "what it measures", "report"])
    assert [code(r[0]) for r in rows] == experiments(), \
        "README.md's experiment table is not params.yaml's `experiments:`, in order"
    for row in rows:
        name = code(row[0])
        assert re.search(r"(Fig|Tab|Sec)\. ", row[1]), f"{name}: no figure, table or section of the paper"
        assert row[2], f"{name}: nothing said about what it measures"
        assert f"`reports/{name}.ipynb`" in row[3] and f"`metrics/{name}.json`" in row[3], row[3]
        assert (REPO / "nbs" / "experiments" / f"{name}.ipynb").is_file(), f"no notebook for {name}"


def test_notebook_table_lists_every_module():
    rows = table(readme(), ["notebook", "module", "what it holds"])
    listed = {code(r[0]): code(r[1]) for r in rows if code(r[0]).endswith(".ipynb") and "*" not in r[0]}
    expected = exported_modules()
    assert expected, "no notebook exports a module"
    missing = {nb: mod for nb, mod in expected.items() if listed.get(nb) != mod}
    extra = {nb: mod for nb, mod in listed.items() if nb not in expected}
    assert not missing and not extra, (f"README.md's notebook table lacks (or has another module for) {missing}; "
                                       f"it lists notebooks that export no such module: {extra}")
    assert all(r[2] for r in rows)


def module_exists(dotted: str) -> bool:
    "`ginn.a.b.c` names a module of this checkout, or something in one (`ginn.world.deformed_images`)."
    parts = dotted.split(".")
    for n in range(len(parts), 1, -1):
        path = REPO.joinpath(*parts[:n])
        if path.with_suffix(".py").is_file() or (path / "__init__.py").is_file():
            return True
    return False


@pytest.mark.parametrize("doc", ["README.md", "nbs/index.ipynb", "docs/reproduce.md"])
def test_named_notebooks_and_modules_exist(doc):
    text = (REPO / doc).read_text(encoding="utf-8")
    if doc.endswith(".ipynb"):
        text = "\n".join("".join(c["source"]) for c in json.loads(text)["cells"])
    notebooks = sorted({p for p in re.findall(r"\bnbs/[\w./-]*\.ipynb", text) if not re.search(r"\*|NAME", p)})
    missing = [p for p in notebooks if not (REPO / p).is_file()]
    assert not missing, f"{doc} names notebooks that do not exist: {missing}"
    modules = sorted(set(re.findall(r"(?<![\w/])ginn(?:\.\w+)+", text)))
    assert not [m for m in modules if not module_exists(m)], \
        f"{doc} names modules that do not exist: {[m for m in modules if not module_exists(m)]}"


def test_checks_can_fail():
    "The table reader sees a missing row, and the module check a missing module."
    text = "| stage | writes |\n|---|---|\n| `prepare` | data |\n\nprose\n| `x` | y |\n"
    assert [code(r[0]) for r in table(text, ["stage", "writes"])] == ["prepare"]
    assert module_exists("ginn.flow.ConditionalFlow") and not module_exists("ginn.no_such_module")
