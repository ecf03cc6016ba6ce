"""Sphinx configuration of ginn's documentation site.

`python docs/build.py` stages the sources (notebooks, executed reports, generated pages) in a temporary folder
and runs Sphinx on them with this file (`sphinx-build -c docs`); see that script for what each page is made of.
Nothing here reaches the network: notebooks are rendered as stored (never executed), and every asset the pages
load (the theme's CSS, JS and icon fonts, MathJax and its fonts) is copied into the site.
"""
import configparser
import re
import shutil
import sys
from importlib.metadata import distribution
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.dont_write_bytecode = True          # importing ginn for autodoc must not add __pycache__ to DVC dependencies
sys.path.insert(0, str(ROOT))           # autodoc documents this checkout's ginn, whatever else is installed

_settings = configparser.ConfigParser()
_settings.read(ROOT / "settings.ini")
_meta = _settings["DEFAULT"]

project = _meta["lib_name"]
author = _meta["author"]
copyright = _meta["copyright"]
release = version = _meta["version"]

extensions = ["myst_nb", "sphinx.ext.autodoc", "sphinx.ext.mathjax"]
exclude_patterns = ["_build", "**.ipynb_checkpoints", ".doctrees"]
source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb"}
default_role = "literal"                # docstrings write `name` for code, as nbdev does
suppress_warnings = []

# --- notebooks (myst-nb): render what is stored, never execute
nb_execution_mode = "off"
nb_merge_streams = True                 # progress bars write many small stderr chunks
nb_output_stderr = "show"
nb_render_markdown_format = "myst"      # Markdown outputs (the reports' metrics tables) as MyST: tables, math
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3

# --- API entries: docs/build.py turns each `show_doc(x)` of a notebook (nbdev adds one after every exported
# definition) into the autodoc entry of x, where the cell stands; a class comes with its documented members
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"members": True}
autodoc_preserve_defaults = True
autodoc_inherit_docstrings = False      # no torch boilerplate ("Define the computation performed at every call")

# --- HTML: sphinx-book-theme; all of its assets (FontAwesome included) ship inside the package
html_theme = "sphinx_book_theme"
html_title = project
html_static_path = ["_static"]
html_css_files = ["ginn.css"]
html_favicon = "_static/favicon.svg"
html_show_sourcelink = False
html_theme_options = {
    "home_page_in_toc": True,
    "show_navbar_depth": 1,
    "use_download_button": True,        # the page's source notebook, served from the site itself
    "use_fullscreen_button": False,
    "use_repository_button": False,
    "navigation_with_keys": False,
    "icon_links": [],
}
html_context = {"default_mode": "light"}  # (figures are drawn on white) and, unset, the theme logs a console error

# --- MathJax 3 served from the site: the bundle and fonts of the PyPI package sphinx-mathjax-offline
# (MathJax 3.2.2), copied without the parts no page loads (the SVG output, the speech rule engine).
mathjax_path = "mathjax/tex-chtml.js"
MATHJAX_PARTS = ["tex-chtml.js", "input/tex/extensions", "output/chtml", "a11y", "ui"]


def mathjax_source() -> Path:
    "The MathJax 3 folder that the `sphinx-mathjax-offline` package installs."
    path = Path(distribution("sphinx-mathjax-offline").locate_file("sphinx-mathjax-offline/static/mathjax"))
    if not (path / "tex-chtml.js").is_file():
        raise FileNotFoundError(f"MathJax not found at {path}: pip install 'sphinx-mathjax-offline>=0.0.2'")
    return path


def copy_mathjax(app, exc):
    if exc is not None or app.builder.format != "html":
        return
    src, dst = mathjax_source(), Path(app.outdir) / "_static" / "mathjax"
    for part in MATHJAX_PARTS:
        if (src / part).is_dir():
            shutil.copytree(src / part, dst / part, dirs_exist_ok=True)
        elif (src / part).is_file():
            (dst / part).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / part, dst / part)


_CODE = re.compile(r"(`(?:[^`\n]|\n(?![ \t]*\n))+`)")   # a code span: within one paragraph, over line breaks too
_RST_SPECIAL = re.compile(r"([\\*|_])")
_BREAK = re.compile(r"[ \t]*\n[ \t]*")


def markdown_docstring(text: str) -> str:
    """An nbdev docstring (Markdown: `code` spans in plain text) as reStructuredText that means the same: code spans
    become literals (a span broken over lines too, its line break a space, as in Markdown), and the characters reST
    would read as markup (`|x|`, `*`, `name_`) stay characters."""
    out = []
    for i, part in enumerate(_CODE.split(text)):
        if i % 2:
            before = "\\ " if out and out[-1][-1:].isalnum() else ""
            code = _BREAK.sub(" ", part[1:-1]).strip()
            out.append(f"{before}``{code}``")
        elif part:
            out.append(("\\ " if out and part[0].isalnum() else "") + _RST_SPECIAL.sub(r"\\\1", part))
    return "".join(out)


def process_docstring(app, what, name, obj, options, lines):
    if name.startswith("ginn."):
        lines[:] = markdown_docstring("\n".join(lines)).split("\n")


def setup(app):
    mathjax_source()                    # fail before building, not after, when the package is missing
    app.connect("autodoc-process-docstring", process_docstring)
    app.connect("build-finished", copy_mathjax)
