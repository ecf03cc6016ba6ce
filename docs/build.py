#!/usr/bin/env python
"""Build ginn's documentation site into `_docs/`, offline: `python docs/build.py` (the `docs` stage of dvc.yaml).

The Sphinx sources are staged in a temporary folder, then Sphinx (myst-nb, sphinx-book-theme; `docs/conf.py`)
renders them with warnings as errors, so a broken internal link or a missing image fails the build:

- `index`            nbs/index.ipynb, with the site's navigation
- `library/NN_name`  each library notebook nbs/NN_*.ipynb as stored (prose, equations, code, outputs), without
                     nbdev's `#|` directive lines and `#| hide` cells, followed by the API of the module it
                     exports (`#| default_exp`), from autodoc: signatures and docstrings
- `reports/NAME`     each executed experiment report reports/NAME.ipynb that `dvc repro` wrote (never re-executed)
- `results`          reports/results.ipynb, the executed results notebook: every metrics file as tables and figures
- `reproduce`        how to rerun everything: README.md's "Set up" and "The pipeline" sections, and this site

After the build every page is checked for assets loaded from another host: the site must render with no network.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path

sys.dont_write_bytecode = True          # nothing this build imports may add __pycache__ to DVC dependencies

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
KERNELSPEC = {"display_name": "Python 3", "language": "python", "name": "python3"}


# ---------------------------------------------------------------- notebooks
def _source(cell) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def directives(cell) -> dict[str, str]:
    "nbdev's `#| name value` lines of a code cell."
    found = {}
    for line in _source(cell).splitlines():
        if line.startswith("#|"):
            name, _, value = line[2:].strip().partition(" ")
            found[name.rstrip(":")] = value.strip()
    return found


def clean_notebook(nb: dict) -> dict:
    """The notebook as a reader should see it: code cells without `#|` lines, no `#| hide` cells, no cell that
    held only directives, and a kernelspec so that code is highlighted as Python."""
    cells = []
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            d = directives(cell)
            if "hide" in d or d.get("include") == "false":
                continue
            src = "\n".join(l for l in _source(cell).splitlines() if not l.startswith("#|")).strip("\n")
            if not src and not cell.get("outputs"):
                continue
            if d.get("echo") == "false":
                cell.setdefault("metadata", {}).setdefault("tags", []).append("remove-input")
            if d.get("output") == "false":
                cell.setdefault("metadata", {}).setdefault("tags", []).append("remove-output")
            cell["source"] = src
        cells.append(cell)
    meta = nb.setdefault("metadata", {})
    meta.setdefault("kernelspec", KERNELSPEC)
    meta.setdefault("language_info", {"name": "python", "pygments_lexer": "ipython3"})
    return {**nb, "cells": cells, "nbformat": 4, "nbformat_minor": 5}


def markdown_cell(text: str) -> dict:
    return {"cell_type": "markdown", "metadata": {}, "source": text}


def default_exp(nb: dict) -> str | None:
    for cell in nb["cells"]:
        if cell["cell_type"] == "code" and "default_exp" in directives(cell):
            return directives(cell)["default_exp"]
    return None


def title(nb: dict, fallback: str) -> str:
    for cell in nb["cells"]:
        if cell["cell_type"] == "markdown":
            m = re.search(r"^# (.+)$", _source(cell), re.M)
            if m:
                return m.group(1).strip()
    return fallback


def read_nb(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def write_nb(nb: dict, path: Path):
    for i, cell in enumerate(nb["cells"]):
        cell.setdefault("id", f"cell-{i}")             # nbformat 4.5 wants ids; nbdev_clean removes them
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(nb, ensure_ascii=False, indent=1), encoding="utf-8")


# ---------------------------------------------------------------- generated pages
def readme_section(readme: str, heading: str) -> str:
    m = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", readme, re.M | re.S)
    return m.group(1).strip() if m else ""


def reproduce_page(root: Path) -> str:
    readme = (root / "README.md").read_text(encoding="utf-8")
    template = (DOCS / "reproduce.md").read_text(encoding="utf-8")
    return (template.replace("{{README:Set up}}", readme_section(readme, "Set up"))
                    .replace("{{README:The pipeline}}", readme_section(readme, "The pipeline")))


# ---------------------------------------------------------------- staging
def stage(root: Path, src: Path):
    "Write the Sphinx source tree of the site into `src`."
    nbs = root / "nbs"
    library = []
    for path in sorted(nbs.glob("[0-9]*.ipynb")):
        nb = clean_notebook(read_nb(path))
        module = default_exp(read_nb(path))
        if module:
            nb["cells"].append(markdown_cell(
                f"## API: `ginn.{module}`\n\nThe names `nbs/{path.name}` exports to `ginn/{module.replace('.', '/')}.py`."
                f"\n\n```{{eval-rst}}\n.. automodule:: ginn.{module}\n   :members:\n```\n"))
        write_nb(nb, src / "library" / path.name)
        library.append(f"library/{path.stem}")
    reports = {}                                        # name -> title
    for path in sorted((root / "reports").glob("*.ipynb")):
        if path.name.startswith("."):
            continue                                    # a report papermill is still writing
        nb = clean_notebook(read_nb(path))
        if path.stem == "results":                      # the results notebook is the site's Results page
            write_nb(nb, src / "results.ipynb")
            continue
        write_nb(nb, src / "reports" / path.name)
        reports[path.stem] = title(nb, path.stem)
    if not (src / "results.ipynb").is_file():
        (src / "results.md").write_text("# Results\n\nNo results yet: run `dvc repro` (see {doc}`reproduce`).\n",
                                        encoding="utf-8")
    (src / "reproduce.md").write_text(reproduce_page(root), encoding="utf-8")

    def toctree(caption, entries):
        return f"```{{toctree}}\n:hidden:\n:caption: {caption}\n\n" + "\n".join(entries) + "\n```\n"

    index = clean_notebook(read_nb(nbs / "index.ipynb"))
    nav = toctree("Library", library)
    if reports:
        nav += "\n" + toctree("Experiment reports", [f"reports/{r}" for r in reports])
    nav += "\n" + toctree("Results and reproduction", ["results", "reproduce"])
    index["cells"].append(markdown_cell(nav))
    write_nb(index, src / "index.ipynb")


# ---------------------------------------------------------------- offline check
class _Loads(HTMLParser):
    "The URLs a page makes the browser fetch by itself (scripts, stylesheets, images, icons, frames, media)."
    def __init__(self):
        super().__init__()
        self.urls = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "link" and a.get("href") and not {"canonical", "alternate", "next", "prev", "search", "index",
                                                    "author", "license", "help"} & set((a.get("rel") or "").split()):
            self.urls.append(a["href"])
        for attr in ("src", "data", "poster"):
            if tag != "a" and a.get(attr):
                self.urls.append(a[attr])
        if a.get("srcset"):
            self.urls += [s.strip().split()[0] for s in a["srcset"].split(",") if s.strip()]


REMOTE = re.compile(r"^(https?:)?//", re.I)


def remote_assets(site: Path) -> list[str]:
    "`file: url` for every asset of the site that would be loaded from another host."
    found = []
    for page in site.rglob("*.html"):
        parser = _Loads()
        parser.feed(page.read_text(encoding="utf-8", errors="replace"))
        found += [f"{page.relative_to(site)}: {u}" for u in parser.urls if REMOTE.match(u.strip())]
    for css in site.rglob("*.css"):
        for u in re.findall(r"""(?:url\(\s*['"]?|@import\s+['"])([^'")\s]+)""", css.read_text(errors="replace")):
            if REMOTE.match(u):
                found.append(f"{css.relative_to(site)}: {u}")
    return found


# ---------------------------------------------------------------- main
def build(root: Path = ROOT, out: Path | None = None, source: Path | None = None, quiet: bool = True) -> Path:
    from sphinx.cmd.build import build_main

    out = Path(out or root / "_docs").resolve()
    with tempfile.TemporaryDirectory(prefix="ginn-docs-") as tmp:
        src = Path(source).resolve() if source else Path(tmp) / "src"
        if src.exists():
            shutil.rmtree(src)
        src.mkdir(parents=True)
        stage(root, src)
        # Sphinx writes into a temporary folder first: myst-nb puts the notebooks' outputs beside its output
        # folder (in `../jupyter_execute`), and a failed build must not leave half a site in `out`
        html = Path(tmp) / "html"
        args = ["-b", "html", "-W", "--keep-going", "-c", str(DOCS), "-d", str(Path(tmp) / "doctrees"),
                str(src), str(html)] + (["-q"] if quiet else [])
        if build_main(args):
            raise SystemExit("docs: the Sphinx build failed (warnings are errors); see the messages above")
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(html, out)
    remote = remote_assets(out)
    if remote:
        raise SystemExit("docs: assets loaded from the network:\n  " + "\n  ".join(remote))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, default=None, help="where the site goes (default: _docs/ in the repository)")
    p.add_argument("--source", type=Path, default=None, help="keep the staged Sphinx sources here (for debugging)")
    p.add_argument("-v", "--verbose", action="store_true", help="show Sphinx's progress, not only its warnings")
    args = p.parse_args(argv)
    out = build(ROOT, args.out, args.source, quiet=not args.verbose)
    print(f"docs: built {out}/index.html")


if __name__ == "__main__":
    main()
