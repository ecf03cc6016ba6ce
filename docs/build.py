#!/usr/bin/env python
"""Build ginn's documentation site into `_docs/`, offline: `python docs/build.py` (the `docs` stage of dvc.yaml).

The Sphinx sources are staged in a temporary folder, then Sphinx (myst-nb, sphinx-book-theme; `docs/conf.py`)
renders them with warnings as errors, so a broken internal link or a missing image fails the build:

- `index`            nbs/index.ipynb, with the site's navigation
- `library/NN_name`  each library notebook nbs/NN_*.ipynb as stored (prose, equations, code, outputs; never
                     executed), its `#|` directives applied by nbdev's own processors (`NBProcessor`; `hide`,
                     `hide_line`, `filter_stream`, ...), and its API in place: nbdev's `add_show_docs` puts a
                     `show_doc` after every exported definition, and each `show_doc(x)` cell becomes the autodoc
                     entry of `x` (signature and docstring), with the exported source folded below it
- `tutorials/NAME`   each recipe notebook nbs/tutorial_*.ipynb as stored (with its outputs; never executed)
- `reports/NAME`     each executed experiment report reports/NAME.ipynb that `dvc repro` wrote (never re-executed)
- `results`          reports/results.ipynb, the executed results notebook: every metrics file as tables and figures
- `reproduce`        how to rerun everything: README.md's "Set up" and "The pipeline" sections, and this site

After the build every page is checked for assets loaded from another host: the site must render with no network.
"""
from __future__ import annotations

import argparse
import ast
import configparser
import copy
import importlib
import inspect
import json
import re
import shutil
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path

from execnb.nbio import dict2nb, mk_cell, nb2dict
from nbdev import processors as nbp
from nbdev.process import NBProcessor, Processor

sys.dont_write_bytecode = True          # nothing this build imports from the repository may add __pycache__ to DVC deps

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
KERNELSPEC = {"display_name": "Python 3", "language": "python", "name": "python3"}


def _settings() -> dict:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "settings.ini")
    return dict(cfg["DEFAULT"])


# ---------------------------------------------------------------- notebooks
# nbdev reads the notebooks' `#|` directives (`NBProcessor`) and its own processors apply them, as `nbdev_docs`
# does: `hide` drops a cell, `hide_line` a line, `filter_stream` output lines, `add_show_docs` puts a `show_doc`
# after each exported definition. What nbdev leaves to Quarto is done here for Sphinx: each `show_doc` becomes
# the autodoc entry of the object it names, where the cell stands, and Quarto's cell options become myst-nb tags.
LIB = _settings().get("lib_name", "ginn")
EXPORTS = {"export", "exports", "exporti"}              # the directives that send a cell to the library
CELL_KEYS = {"cell_type", "id", "metadata", "source", "outputs", "execution_count", "attachments"}


def _source(cell) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else (src or "")


def _is_show_doc(node) -> bool:
    return (isinstance(node, ast.Expr) and isinstance(node.value, ast.Call) and node.value.args
            and isinstance(node.value.func, ast.Name) and node.value.func.id == "show_doc")


def show_doc_calls(cell) -> list[ast.Call]:
    "The `show_doc(x, ...)` calls of a code cell that holds nothing else (none when it holds other code)."
    tree = cell.parsed_() if cell.get("cell_type") == "code" else None
    return [n.value for n in tree] if tree and all(_is_show_doc(n) for n in tree) else []


def _exported_modules(nb) -> list[str]:
    "The modules a processed notebook exports to: its `default_exp` last, and any `#| export name` before it."
    named = [args[0] for c in nb.cells for d, args in c.directives_.items() if d in EXPORTS and args]
    default = [c.directives_["default_exp"][0] for c in nb.cells if c.directives_.get("default_exp")]
    return list(dict.fromkeys(m for m in named if m not in default[:1])) + default[:1]


def autodoc_target(obj, expr: str, home: str) -> tuple[str, str]:
    "(autodoc directive, dotted name) for `obj`, which the notebook of module `home` calls `expr`."
    fn = obj.fget if isinstance(obj, property) else getattr(obj, "__func__", obj)
    module, qual = getattr(fn, "__module__", None), getattr(fn, "__qualname__", None)
    if not (isinstance(module, str) and isinstance(qual, str) and "<" not in qual and module.split(".")[0] == LIB):
        module, qual = home, expr                       # not defined in the library: the name it has here
    if inspect.isclass(obj):
        return "autoclass", f"{module}.{qual}"
    if isinstance(obj, property):
        return "autoproperty", f"{module}.{qual}"
    if inspect.isroutine(obj) or callable(obj):
        return ("automethod" if "." in qual else "autofunction"), f"{module}.{qual}"
    return "autodata", f"{module}.{qual}"


class api_first(Processor):
    """Each exported cell after the `show_doc` cells that `add_show_docs` put behind it (as nbdev's `mv_exports`
    does for `exports`), and those in the order of the definitions (it inserts each right after the cell)."""
    def begin(self):
        cells, i = self.nb.cells, 0
        while i < len(cells):
            j = i + 1
            while j < len(cells) and cells[j].get("has_sd"):
                j += 1
            if j > i + 1 and EXPORTS & set(cells[i].directives_):
                cells[i:j] = cells[i + 1:j][::-1] + [cells[i]]
            i = j


class show_doc_autodoc(Processor):
    """Each `show_doc(x)` cell as the Sphinx autodoc entry of `x`, in place. `x` is looked up in the modules the
    notebook exports to, never by running the notebook. A class comes with its documented public members, less
    those the notebook shows on their own; an object that an earlier page documents already is documented again
    with `:no-index:` (the site has one target per object)."""
    def __init__(self, nb, path: Path, documented: set):
        super().__init__(nb)
        self.path, self.documented = path, documented

    def begin(self):
        calls = {i: show_doc_calls(c) for i, c in enumerate(self.nb.cells)}
        calls = {i: cs for i, cs in calls.items() if cs}
        if not calls:
            return
        modules = _exported_modules(self.nb)
        if not modules:
            raise SystemExit(f"docs: {self.path.name} calls show_doc but exports to no module (`#| default_exp`)")
        ns = {}
        for name in modules:
            ns.update(vars(importlib.import_module(f"{LIB}.{name}")))
        home = f"{LIB}.{modules[-1]}"
        targets = {}
        for i, cs in calls.items():
            for call in cs:
                expr = ast.unparse(call.args[0])
                try:
                    obj = eval(compile(ast.Expression(call.args[0]), str(self.path), "eval"), dict(ns))
                except Exception as e:
                    raise SystemExit(f"docs: {self.path.name}: show_doc({expr}): not found in "
                                     f"{', '.join(LIB + '.' + m for m in modules)} ({type(e).__name__}: {e})")
                targets.setdefault(i, []).append(autodoc_target(obj, expr, home))
        shown = {name for ts in targets.values() for _, name in ts}
        for i, ts in targets.items():
            blocks = []
            for kind, name in ts:
                lines = [f".. {kind}:: {name}"]
                own = sorted(n[len(name) + 1:] for n in shown if n.startswith(name + ".") and "." not in n[len(name) + 1:])
                if kind == "autoclass" and own:
                    lines.append(f"   :exclude-members: {', '.join(own)}")
                if name in self.documented:
                    lines.append("   :no-index:")
                self.documented.add(name)
                blocks.append("\n".join(lines))
            cell = mk_cell("```{eval-rst}\n" + "\n\n".join(blocks) + "\n```", "markdown")
            cell.directives_ = {}
            self.nb.cells[i] = cell


_DIRECTIVE_LINE = re.compile(r"^\s*#\s*\|")


def _tag(cell, tag: str):
    cell.setdefault("metadata", {}).setdefault("tags", []).append(tag)


def to_myst(cell):
    """What nbdev leaves to Quarto, for myst-nb: exported source folds away below its API (`exports` shows it, as
    in nbdev), Quarto's `echo`, `output`, `include` and `code-fold` options become tags and their lines go, and
    a code cell left with neither code nor output goes."""
    if cell.get("cell_type") != "code":
        return
    d = {k.rstrip(":"): (v[0].lower() if v else "") for k, v in cell.directives_.items()}
    lines = cell.source.splitlines()
    while lines and _DIRECTIVE_LINE.match(lines[0]):    # Quarto's options, which NBProcessor leaves in place
        lines.pop(0)
    cell.set_source("\n".join(lines).strip("\n"))
    if d.get("include") == "false" or not (cell.source.strip() or cell.get("outputs")):
        del cell["source"]
        return
    if ({"export", "exporti"} & set(d) and "exports" not in d) or d.get("code-fold") in ("true", "show"):
        _tag(cell, "hide-input")
    if d.get("echo") == "false":
        _tag(cell, "remove-input")
    if d.get("output") == "false":
        _tag(cell, "remove-output")


def process_notebook(nb: dict, path: Path, documented: set | None = None) -> dict:
    """The notebook as a reader should see it, through nbdev's processors: no hidden cells or lines, no directive
    lines; with `documented` (the targets earlier pages documented), every exported definition and `show_doc`
    documented in place; a kernelspec so that code is highlighted as Python."""
    book = dict2nb(copy.deepcopy(nb))
    procs = [nbp.strip_ansi, nbp.hide_line, nbp.filter_stream_, nbp.rm_header_dash, nbp.clean_magics,
             nbp.strip_hidden_metadata, nbp.hide_, to_myst]
    if documented is not None:
        procs = [nbp.add_show_docs, api_first, show_doc_autodoc(book, path, documented)] + procs
    book = NBProcessor(nb=book, procs=procs, process=True).nb
    out = nb2dict(book)
    out["cells"] = [{k: v for k, v in c.items() if k in CELL_KEYS} for c in out["cells"]]
    meta = out.setdefault("metadata", {})
    meta.setdefault("kernelspec", KERNELSPEC)
    meta.setdefault("language_info", {"name": "python", "pygments_lexer": "ipython3"})
    return {**out, "nbformat": 4, "nbformat_minor": 5}


def default_exp(nb: dict) -> str | None:
    "The module a notebook exports to (`#| default_exp`), as nbdev reads it."
    cells = NBProcessor(nb=dict2nb(copy.deepcopy(nb))).nb.cells
    return next((c.directives_["default_exp"][0] for c in cells if c.directives_.get("default_exp")), None)


def markdown_cell(text: str) -> dict:
    return {"cell_type": "markdown", "metadata": {}, "source": text}


def title(nb: dict, fallback: str) -> str:
    for cell in nb["cells"]:
        if cell["cell_type"] == "markdown":
            m = re.search(r"^# (.+)$", _source(cell), re.M)
            if m:
                return m.group(1).strip()
    return fallback


def read_nb(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def source_map(nb: dict) -> list[int]:
    """The first line of each cell, counting the cells' lines one after another (and one between cells): myst-nb's
    `source_map`. Without it myst-nb numbers the lines of cell i from 10000 (i + 1), and MyST parses each
    ```` ```{eval-rst} ```` block, every autodoc entry here, after that many blank lines (its line numbers then match
    the page's): 200 entries, deep in long notebooks, made docutils walk some 50 million empty lines per build."""
    starts, line = [], 0
    for cell in nb["cells"]:
        starts.append(line)
        line += len(_source(cell).splitlines()) + 1
    return starts


def write_nb(nb: dict, path: Path):
    for i, cell in enumerate(nb["cells"]):
        cell["id"] = f"cell-{i}"                        # nbformat 4.5 wants ids; nbdev_clean removes them
    nb.setdefault("metadata", {})["source_map"] = source_map(nb)
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
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))                   # show_doc targets and autodoc: this checkout's library
    library, documented = [], set()
    for path in sorted(nbs.glob("[0-9]*.ipynb")):
        raw = read_nb(path)
        nb = process_notebook(raw, path, documented)
        module = default_exp(raw)
        if module:                                      # under the title: which module the page documents
            nb["cells"].insert(1 if nb["cells"] and nb["cells"][0]["cell_type"] == "markdown" else 0, markdown_cell(
                f"This notebook is the source of `{LIB}.{module}` (`{LIB}/{module.replace('.', '/')}.py`, generated by "
                f"`nbdev_export`); each name it exports is documented where it is defined."))
        write_nb(nb, src / "library" / path.name)
        library.append(f"library/{path.stem}")
    tutorials = []                                      # nbs/tutorial_*.ipynb: recipes, as stored (never executed)
    for path in sorted(nbs.glob("tutorial_*.ipynb")):
        write_nb(process_notebook(read_nb(path), path, documented), src / "tutorials" / path.name)
        tutorials.append(f"tutorials/{path.stem}")
    reports = {}                                        # name -> title
    for path in sorted((root / "reports").glob("*.ipynb")):
        if path.name.startswith("."):
            continue                                    # a report papermill is still writing
        nb = process_notebook(read_nb(path), path)
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

    index = process_notebook(read_nb(nbs / "index.ipynb"), nbs / "index.ipynb")
    nav = toctree("Library", library)
    if tutorials:
        nav += "\n" + toctree("Tutorials", tutorials)
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
