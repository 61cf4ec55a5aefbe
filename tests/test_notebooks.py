"""The book's notebooks: each runs end to end in the smoke profile, is stored clean with the
standard parameters cell, and is listed in rs_lib.book.NOTEBOOKS and _toc.yml; plus the papermill
machinery (parameter injection and validation, kernel environment, failures) on tiny notebooks."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import nbformat
import pytest
from papermill.exceptions import PapermillExecutionError

from rs_lib import _record, book, execute

from helpers import assert_lookups_equal_plan

SOURCES = sorted(book.NOTEBOOK_DIR.glob("*.ipynb"))
IDS = [p.stem for p in SOURCES]


def _code_lines(source: str) -> list[str]:
    """The statements of a cell, less blank lines, comments and imports."""
    lines = [line.strip() for line in source.splitlines()]
    return [line for line in lines
            if line and not line.startswith(("#", "import ", "from "))]


# ---------------------------------------------------------------------------- the real notebooks

@pytest.mark.notebook
@pytest.mark.parametrize("path", SOURCES, ids=IDS)
def test_notebook_runs_in_smoke_profile(path, smoke_executed):
    executed = smoke_executed(path.stem)  # once per session: tests/test_site.py builds the site from it
    nb = nbformat.read(str(executed), as_version=4)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert injected and all("hide-input" in c.metadata["tags"] for c in injected)
    # The runs and results the notebook looked up in the store are exactly its plan's (issue 9).
    assert_lookups_equal_plan(path.stem, "smoke", smoke_executed.record(path.stem))


@pytest.mark.parametrize("path", SOURCES, ids=IDS)
def test_notebook_is_stored_without_outputs(path):
    nb = nbformat.read(str(path), as_version=4)
    dirty = [i for i, c in enumerate(nb.cells)
             if c.cell_type == "code" and (c.get("outputs") or c.get("execution_count") is not None)]
    assert not dirty, f"{path.name}: cells {dirty} hold outputs; clear them before committing"


@pytest.mark.parametrize("path", SOURCES, ids=IDS)
def test_parameters_cell_starts_with_profile_and_device(path):
    nb = nbformat.read(str(path), as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1 and cells[0].cell_type == "code"
    assert _code_lines(cells[0].source)[:2] == ['profile = os.environ.get("RS_PROFILE", "cpu")',
                                                'device = "auto"']


def test_toc_and_NOTEBOOKS_list_every_notebook_in_the_same_order():
    assert set(IDS) == set(book.NOTEBOOKS), "notebooks/ and rs_lib.book.NOTEBOOKS differ"
    assert len(set(book.NOTEBOOKS)) == len(book.NOTEBOOKS)
    assert book.toc_notebooks() == book.NOTEBOOKS, "_toc.yml and rs_lib.book.NOTEBOOKS differ"


# ----------------------------------------------------------------- machinery, on tiny notebooks

PARAMETERS = 'import os\nprofile = os.environ.get("RS_PROFILE", "cpu")\ndevice = "auto"\nscale: int = 1\n'
REPORT = """\
import json, os, sys
from pathlib import Path
root = Path(os.environ["RS_RESULTS"])
root.mkdir(parents=True, exist_ok=True)
(root / "report.json").write_text(json.dumps({
    "profile": profile, "device": device, "scale": scale, "cwd": os.getcwd(),
    "threads": os.environ.get("OMP_NUM_THREADS"), "python": sys.executable}))
"""


def _write_notebook(path: Path, *cells: str, parameters: str | None = PARAMETERS) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    if parameters is not None:
        nb.cells.append(nbformat.v4.new_code_cell(parameters, metadata={"tags": ["parameters"]}))
    nb.cells += [nbformat.v4.new_code_cell(c) for c in cells]
    nbformat.write(nb, str(path))
    return path


def test_execute_injects_parameters_in_repo_root_kernel_of_this_python(tmp_path, results_root):
    source = _write_notebook(tmp_path / "tiny.ipynb", REPORT)
    executed = execute.execute_notebook(source, profile="smoke", device="cpu", output_dir=tmp_path / "out",
                                        parameters={"scale": 3}, progress=False, threads=2)
    assert executed == tmp_path / "out" / "tiny.ipynb" and executed.is_file()
    report = json.loads((results_root / "report.json").read_text())
    assert report["profile"] == "smoke" and report["device"] == "cpu" and report["scale"] == 3
    assert Path(report["cwd"]) == book.REPO_ROOT
    assert report["threads"] == "2"
    assert Path(report["python"]).parent == Path(sys.executable).parent


def test_unknown_parameter_raises_value_error_naming_it_before_running(tmp_path, results_root):
    source = _write_notebook(tmp_path / "tiny.ipynb", REPORT)
    with pytest.raises(ValueError, match="'epochz'.*profile, device, scale"):
        execute.execute_notebook(source, profile="smoke", device="cpu", output_dir=tmp_path / "out",
                                 parameters={"epochz": 3}, progress=False)
    assert not (tmp_path / "out").exists()
    assert not results_root.exists()


def test_failing_cell_fails_execution(tmp_path, results_root):
    source = _write_notebook(tmp_path / "broken.ipynb", "raise RuntimeError('cell 2 is broken')")
    with pytest.raises(PapermillExecutionError, match="cell 2 is broken"):
        execute.execute_notebook(source, profile="smoke", device="cpu", output_dir=tmp_path / "out",
                                 progress=False, threads=1)


@pytest.mark.parametrize("kwargs, argument", [
    ({"profile": "gpu"}, "profile"),
    ({"device": "tpu"}, "device"),
    ({"device": 0}, "device"),
    ({"threads": 0}, "threads"),
    ({"parameters": {"profile": "paper"}}, "profile"),
    ({"parameters": ["scale"]}, "parameters"),
    ({"progress": "yes"}, "progress"),
])
def test_bad_arguments_raise_value_error_naming_them(tmp_path, kwargs, argument):
    source = _write_notebook(tmp_path / "tiny.ipynb", "pass")
    call = {"profile": "smoke", "device": "cpu", "output_dir": tmp_path / "out", **kwargs}
    with pytest.raises(ValueError, match=argument):
        execute.execute_notebook(source, **call)


def test_missing_notebook_or_parameters_cell_raises_value_error(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        execute.execute_notebook("no_such_chapter", profile="smoke", output_dir=tmp_path)
    bare = _write_notebook(tmp_path / "bare.ipynb", "pass", parameters=None)
    with pytest.raises(ValueError, match="tagged 'parameters'"):
        execute.execute_notebook(bare, profile="smoke", output_dir=tmp_path)


def test_notebook_parameters_lists_top_level_assignments_in_order(tmp_path):
    cell = PARAMETERS + "a, (b, c) = 1, (2, 3)\nif True:\n    hidden = 1\nscale += 1\n"
    path = _write_notebook(tmp_path / "p.ipynb", "pass", parameters=cell)
    assert execute.notebook_parameters(path) == ("profile", "device", "scale", "a", "b", "c")


def test_toc_notebooks_reads_executed_chapters_in_order(tmp_path):
    toc = tmp_path / "_toc.yml"
    toc.write_text("format: jb-book\nroot: book/intro\nparts:\n"
                   "  - caption: A\n    chapters:\n      - file: book/executed/second\n"
                   "      - file: book/prose\n"
                   "  - caption: B\n    chapters:\n      - file: book/executed/first.ipynb\n"
                   "        sections:\n          - file: book/executed/third\n")
    assert book.toc_notebooks(toc) == ("second", "first", "third")


# The calls that do the science (train, certify, attack, evaluate, plot); a cell without one only presents.
SCIENCE = re.compile(r"run_training\(|\bbs\.fit\(|\bbs\.train\(|\bbs\.curvature\(|noisy_accuracy\(|sns\.\w+plot\(|"
                     r"empirical\(|\.interpolation\(|cost\.measure\(|certify_run\(|robust_accuracy\(|\.robustness\(|hessian\.\w+\(|evaluate\.\w+\(|"
                     r"attacks\.\w+\(|plots\.(?!captioned|scale_caption|scale_note|set_theme|label_colours)\w+\(")
HIDDEN = {"hide-input", "remove-input", "hide-cell", "remove-cell"}


@pytest.mark.parametrize("path", SOURCES, ids=IDS)
def test_presentation_cells_and_parameters_are_behind_a_toggle(path):
    nb = nbformat.read(str(path), as_version=4)
    shown = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"
             and not HIDDEN & set(c.metadata.get("tags", []))
             and ("parameters" in c.metadata.get("tags", []) or not SCIENCE.search(c.source))]
    assert not shown, (f"{path.name}: code cells {shown} only present (no training, certification, attack, "
                       f"evaluation or plot call) or set parameters; tag them hide-input")
