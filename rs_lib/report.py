"""How the book's pages show results to a reader: tables without pandas' machinery, shared summaries.

DESIGN.md, "The book": a page is written for a reader.  Every table a notebook displays goes through
:func:`reader_table` (registered by :func:`use_reader_tables` as the notebooks' HTML form of a
``DataFrame``): no 0..n index column (a meaningful index becomes ordinary columns), no ``NaN`` (a
dash, explained under the table), numbers rounded for reading.  :func:`glue_table` glues such a
table for a numbered ``{glue:figure}`` (``:figclass: rs-table``, numbered "Table N" by
book/_ext/numbered_tables.py) and :func:`glue_value` a number for ``{glue:text}``.
:func:`train_table` is the training summary the smoothing notebooks print under their training
cell.  The verdicts (:func:`sign_verdict`, :func:`not_worse_verdict`, :func:`ratio_verdict`) are the
code of every Reading and of the chapters' "what reproduced" tables (:func:`claim`,
:func:`claims_table`); :func:`count_verdict` judges a claim checked once per cell of a grid.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from . import _validate as check

#: What a missing value prints as, and how the table says so.
DASH = "–"
DASH_NOTE = f"{DASH}: not in the paper, or not run at this scale."


def _flat(frame: pd.DataFrame) -> pd.DataFrame:
    """The index as ordinary leading columns (dropped when it is only 0..n-1), one level of headers."""
    out = frame.copy()
    plain = isinstance(out.index, pd.RangeIndex) and out.index.name is None
    if not plain:
        names = [n if n is not None else ("" if out.index.nlevels == 1 else f"level {i}")
                 for i, n in enumerate(out.index.names)]
        out.index = out.index.set_names(names)
        out = out.reset_index()
    else:
        out = out.reset_index(drop=True)
    if isinstance(out.columns, pd.MultiIndex):
        out.columns = [" ".join(str(p) for p in parts if str(p) != "").strip() for parts in out.columns]
    out.columns = [str(c) for c in out.columns]
    return out


def reader_table(frame: pd.DataFrame, *, digits: int = 3, caption: str | None = None,
                 column_digits: Mapping[str, int] | None = None) -> Any:
    """A ``DataFrame`` as a reader sees it: a pandas ``Styler`` with no index column, numbers to
    ``digits`` decimals (``column_digits``: other decimals for some columns, e.g. 1 for accuracies in
    % beside an ACR), missing values as a dash and, when there is one, a note saying what the dash
    means (after ``caption``)."""
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(f"frame must be a pandas DataFrame, got {type(frame).__name__}")
    check.integer("digits", digits, low=0)
    flat = _flat(frame)
    column_digits = dict(column_digits or {})
    unknown = [c for c in column_digits if c not in flat.columns]
    if unknown:
        raise ValueError(f"column_digits: {unknown} are not columns of the table ({list(flat.columns)})")
    for column, n in column_digits.items():
        check.integer(f"column_digits[{column!r}]", n, low=0)
    notes = [caption] if caption else []
    if flat.isna().to_numpy().any():
        notes.append(DASH_NOTE)
    styler = (flat.style.hide(axis="index").format(precision=digits, na_rep=DASH, thousands=None)
              .set_table_attributes('class="dataframe reader-table"'))
    for column, n in column_digits.items():
        styler = styler.format(precision=n, na_rep=DASH, thousands=None, subset=[column])
    if notes:
        styler = styler.set_caption(" ".join(notes))
    return styler


def table_note(scale: str, paper_setting: str | None = None) -> str:
    """The note under a table: the page's scale line, and the setting of the paper's columns."""
    return scale if paper_setting is None else f"{scale} Paper columns: {paper_setting}."


def glue_table(name: str, frame: pd.DataFrame, scale: str, *, digits: int = 3,
               paper_setting: str | None = None, column_digits: Mapping[str, int] | None = None) -> None:
    """Glue ``frame`` as a :func:`reader_table` under ``name`` (``digits``, ``column_digits``: its
    decimals), with the scale line (and the paper columns' setting; :func:`table_note`) and the dash's meaning under it, for a markdown cell's
    ``{glue:figure}`` with ``:name: name`` and ``:figclass: rs-table`` (a numbered table)."""
    from myst_nb import glue

    _name(name)
    glue(name, reader_table(frame, digits=digits, caption=table_note(scale, paper_setting), column_digits=column_digits),
         display=False)


def glue_value(name: str, value: Any, fmt: str | None = None) -> None:
    """Glue a number under ``name`` for ``{glue:text}`` in the page's prose: formatted with
    ``fmt`` (e.g. ``".1f"``, ``"+.3f"``, ``"d"`` for a count) into a string when given, else as a plain ``float``/``int``
    (for a format in the role).  NaN or None glues as the dash: a sentence never shows "nan"."""
    from myst_nb import glue

    _name(name)
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        value = DASH
    elif fmt is not None:
        value = format(int(value) if fmt[-1] in "bdoxX" else float(value), fmt)  # "d": a count
    elif not isinstance(value, (str, int)):
        value = float(value)  # a numpy scalar glues its repr ("np.float64(...)") otherwise
    glue(name, value, display=False)


def _name(name: Any) -> None:
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string (the glue key), got {name!r}")


def _frame_html(frame: pd.DataFrame) -> str:
    return reader_table(frame).to_html()


def use_reader_tables() -> None:
    """Make every ``DataFrame`` a notebook displays render as :func:`reader_table` (HTML output;
    the plain-text form is unchanged).  Does nothing outside IPython."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython comes with Jupyter Book
        return
    shell = get_ipython()
    if shell is None:
        return
    shell.display_formatter.formatters["text/html"].for_type(pd.DataFrame, _frame_html)


def train_table(runs: Mapping[str, Any]) -> pd.DataFrame:
    """One row per training run (``{label: stored run}``; a tuple label is joined with commas): epochs, validation clean accuracy of the
    last epoch, total training time (s) and forward passes per iteration (batch-equivalents, the
    methods' own count; ``python -m rs_lib list``)."""
    if not isinstance(runs, Mapping) or not runs:
        raise ValueError(f"runs must be a non-empty mapping of label to stored run, got {runs!r}")
    rows = []
    for label, run in runs.items():
        summary = getattr(run, "summary", None)
        if not isinstance(summary, Mapping):
            raise ValueError(f"runs[{label!r}] is not a stored run (it has no .summary): {run!r}")
        name = ", ".join(str(part) for part in label) if isinstance(label, tuple) else str(label)
        rows.append({"run": name, "epochs": summary["epochs"],
                     "val clean acc (last)": summary["last"]["val_clean_acc"],
                     "train time (s)": summary["train_time_total"],
                     "forward passes / iter": summary["passes_per_iteration"]["forward"]})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------ what reproduced, and verdicts

REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced"
NOT_COMPARABLE = "not comparable at this scale"
VERDICTS = (REPRODUCED, NOT_REPRODUCED, NOT_COMPARABLE)


def sign_verdict(ours: float | None, paper: float, *, se: float | None = None) -> str:
    """Verdict on a claim of the form "A is above B" (``paper`` and ``ours`` are the differences
    A − B): reproduced when ours has the paper's sign and, given its standard error ``se``, lies
    beyond two of them; not comparable when ours was not measured at this scale (None or NaN)."""
    if ours is None or pd.isna(ours):
        return NOT_COMPARABLE
    if se is not None and not pd.isna(se) and abs(ours) <= 2 * se:
        return NOT_REPRODUCED
    return REPRODUCED if (ours > 0) == (paper > 0) and ours != 0 else NOT_REPRODUCED


def not_worse_verdict(ours: float | None, margin: float, *, se: float | None = None) -> str:
    """Verdict on a claim "A is as good as B" read as the papers use it, one-sided (non-inferiority):
    ``ours`` = A − B, reproduced when A is at most ``margin`` below B (plus two standard errors,
    given ``se``).  A that is *better* than B by any amount reproduces the claim: "as robust as
    TRADES" is not contradicted by a method that is more robust.  Not comparable when not measured."""
    if ours is None or pd.isna(ours):
        return NOT_COMPARABLE
    check.non_negative("margin", margin)
    slack = 0.0 if se is None or pd.isna(se) else 2 * se
    return REPRODUCED if ours >= -(margin + slack) else NOT_REPRODUCED


def ratio_verdict(ours: float | None, paper: float, *, tolerance: float = 0.25) -> str:
    """Verdict on a claimed ratio (e.g. a cost ratio): reproduced when ours is within ``tolerance``
    (relative) of the paper's; not comparable when not measured (None or NaN)."""
    if ours is None or pd.isna(ours):
        return NOT_COMPARABLE
    check.positive("paper", paper)
    return REPRODUCED if abs(ours / paper - 1) <= tolerance else NOT_REPRODUCED


def count_verdict(holds: int, cells: int) -> str:
    """Verdict on a claim checked in each of ``cells`` cells of a grid (radii, σ, seeds) and found to
    hold in ``holds`` of them: reproduced when it holds in every cell; not comparable when there is
    no cell at this scale."""
    check.integer("cells", cells, low=0)
    check.integer("holds", holds, low=0)
    if holds > cells:
        raise ValueError(f"holds must be at most cells ({cells}), got {holds}")
    if cells == 0:
        return NOT_COMPARABLE
    return REPRODUCED if holds == cells else NOT_REPRODUCED


def claim(claim: str, source: str, paper: float, ours: float | None, scale: str, verdict: str) -> dict[str, Any]:
    """One row of a chapter's "what reproduced" table."""
    check.choice("verdict", verdict, VERDICTS)
    return {"claim": claim, "paper's figure/table": source, "paper": paper,
            "ours": None if ours is None or pd.isna(ours) else ours, "scale": scale, "verdict": verdict}


def claims_table(rows: list[Mapping[str, Any]]) -> pd.DataFrame:
    """The "what reproduced" table of a chapter page (rows from :func:`claim`)."""
    if not rows:
        raise ValueError("rows must hold at least one claim")
    return pd.DataFrame(rows, columns=["claim", "paper's figure/table", "paper", "ours", "scale", "verdict"])
