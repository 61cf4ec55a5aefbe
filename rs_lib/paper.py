"""The papers' published numbers (transcribed in ``rs_lib/paper_tables/``) and paper-vs-ours frames.

Every figure or table of the book puts the paper's number beside the reproduced one and says at
which scale ours was produced; :func:`side_by_side` builds that frame, and :func:`stacked` puts its two sources on two rows
when it is too wide for the page.
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


#: The two sources of a :func:`side_by_side` frame, as :func:`stacked` names its rows.
SOURCES = ("ours", "paper")


def stacked(frame: pd.DataFrame, *, on: str | Sequence[str]) -> pd.DataFrame:
    """A :func:`side_by_side` frame with ours and the paper's on two rows instead of two columns:
    one row per (``on`` key, source), a ``source`` column after the key, and each ``<col> (ours)`` /
    ``<col> (paper)`` pair as one column ``<col>``.  Half as wide, for a table with many reproduced
    columns (certified accuracy at every radius) that would not fit the text column side by side.

    Other columns (``side_by_side``'s ``keep``) describe our run and stay on the ``ours`` row. A
    row whose reproduced columns are all missing (a setting the paper does not report, or one not
    run at this scale; text columns such as settings do not count) is left out; ``attrs`` (the two settings) carry over.
    """
    on = [on] if isinstance(on, str) else list(on)
    missing = [c for c in on if c not in frame.columns]
    if missing:
        raise ValueError(f"on: {missing} not columns of the frame ({list(frame.columns)})")
    suffixes = {w: f" ({w})" for w in SOURCES}
    pairs = [c.removesuffix(suffixes["ours"]) for c in frame.columns if c.endswith(suffixes["ours"])]
    values = [c for c in pairs if f"{c}{suffixes['paper']}" in frame.columns]
    if not values:
        raise ValueError(f"frame has no '<col> (ours)' / '<col> (paper)' pair to stack: {list(frame.columns)}")
    paired = {f"{c}{suffixes[w]}" for c in values for w in SOURCES}
    extra = [c for c in frame.columns if c not in paired and c not in on]
    # A row is kept when it holds a number; a text pair (e.g. the settings each side holds fixed) alone does not count.
    numbers = [c for c in values if any(pd.api.types.is_numeric_dtype(frame[f"{c}{suffixes[w]}"]) for w in SOURCES)] or values
    parts = []
    for order, source in enumerate(SOURCES):
        part = frame[on].copy()
        part["source"] = source
        for col in values:
            part[col] = frame[f"{col}{suffixes[source]}"]
        for col in extra:
            part[col] = frame[col] if source == "ours" else None
        part["_row"], part["_source"] = range(len(frame)), order
        parts.append(part[part[numbers].notna().any(axis=1)])
    out = (pd.concat(parts).sort_values(["_row", "_source"], kind="stable")
           .drop(columns=["_row", "_source"]).reset_index(drop=True))
    out.attrs.update(frame.attrs)
    return out


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
