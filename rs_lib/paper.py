"""The papers' published numbers (transcribed in ``rs_lib/paper_tables/``) and paper-vs-ours frames.

Every figure or table of the book puts the paper's number beside the reproduced one and says at
which scale ours was produced; :func:`side_by_side` builds that frame.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from . import _validate as check

TABLE_DIR = Path(__file__).resolve().parent / "paper_tables"
TABLES = tuple(sorted(p.stem for p in TABLE_DIR.glob("*.csv")))


def load(name: str) -> pd.DataFrame:
    """One transcribed table, e.g. ``load("bs_cifar10_resnet18")`` (see paper_tables/README.md)."""
    check.choice("name", name, TABLES)
    return pd.read_csv(TABLE_DIR / f"{name}.csv")


#: The paper of each table, by the prefix of the table's name.
PAPERS = {"bs": "Backward Smoothing", "smoothadv": "SmoothAdv", "smoothmix": "SmoothMix"}


def source(name: str) -> str:
    """Where table ``name`` comes from, as ``paper_tables/README.md`` lists it, with the paper's name
    (``source("smoothmix_mnist") == "SmoothMix Table 2"``, ``source("bs_beta") == "Backward Smoothing
    Table 12"``), for figure titles and captions."""
    check.choice("name", name, TABLES)
    title = PAPERS[name.split("_", 1)[0]]
    for line in (TABLE_DIR / "README.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and cells[0] == f"{name}.csv":
            return cells[1] if cells[1].startswith(title) else f"{title} {cells[1]}"
    raise ValueError(f"name: {name!r} has no row in {TABLE_DIR / 'README.md'}")


def side_by_side(ours: pd.DataFrame, paper: pd.DataFrame, *, on: str | Sequence[str],
                 columns: Mapping[str, str], scale: str, paper_setting: str,
                 keep: Sequence[str] = ()) -> pd.DataFrame:
    """Join our numbers and the paper's on ``on``.

    ``columns`` maps a column of ``ours`` to the paper column it reproduces; the result has
    ``<col> (ours)`` and ``<col> (paper)`` next to each other, and ``attrs`` holding the two
    settings so that captions can state them. ``keep``: more columns of ``ours`` that stay on their
    own row (e.g. the configuration and mean of each of several rows with the same ``on`` key);
    merging them on afterwards by ``on`` alone would pair each row with every other row's values.
    """
    on = [on] if isinstance(on, str) else list(on)
    keep = list(keep)
    for col in list(columns) + on + keep:
        if col not in ours.columns:
            raise ValueError(f"columns: {col!r} is not a column of ours ({list(ours.columns)})")
    for col in list(columns.values()) + on:
        if col not in paper.columns:
            raise ValueError(f"columns: {col!r} is not a column of the paper table ({list(paper.columns)})")
    left = ours[on + keep + list(columns)].rename(columns={c: f"{c} (ours)" for c in columns})
    right = paper[on + list(columns.values())].rename(
        columns={p: f"{c} (paper)" for c, p in columns.items()})
    frame = left.merge(right, on=on, how="outer")
    ordered = on + keep + [f"{c} ({w})" for c in columns for w in ("ours", "paper")]
    frame = frame[ordered]
    frame.attrs.update(scale=scale, paper_setting=paper_setting)
    return frame


def radius_columns(frame: pd.DataFrame) -> dict[float, str]:
    """Map radius -> column for the certified-accuracy tables' ``r0.25``-style columns."""
    out: dict[float, Any] = {}
    for col in frame.columns:
        if col.startswith("r"):
            try:
                out[float(col[1:])] = col
            except ValueError:
                continue
    return out
