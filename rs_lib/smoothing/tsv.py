"""The certify TSV: Cohen et al.'s per-example file format, its settings sidecar, reading and merging.

A certify TSV has the reference columns ``idx label predict radius correct time`` (time as
``H:MM:SS.ffffff``) followed by ``p_lower count n``, floats at full precision, one line per
example.  Beside it, ``<file>.meta.json`` keeps the settings it was certified with and, once the
file is finished, its size and SHA-256 (``complete``), so that a truncated or edited file is
caught.  Reading accepts the reference's own files too (without the extra columns).

Public names: ``TSV_COLUMNS``, ``EXTRA_COLUMNS``, ``HEADER``, ``read_certify_tsv`` (one or several
files, sorted by idx; overlapping shards are an error), ``merge_certify_tsv`` (shards into one
file, atomically), ``check_certify_output`` (a finished file is still what was written),
``tsv_row``, ``meta_path`` / ``read_meta`` / ``write_meta`` / ``tsv_digest`` (the sidecar) and
``drop_torn_line``.  All cost one pass over the file.
"""

from __future__ import annotations

import datetime
import io
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from rs_lib import store

from .classifier import Certificate

TSV_COLUMNS = ("idx", "label", "predict", "radius", "correct", "time")
EXTRA_COLUMNS = ("p_lower", "count", "n")
HEADER = "\t".join(TSV_COLUMNS + EXTRA_COLUMNS)


def tsv_row(idx: int, label: int, certificate: Certificate, seconds: float) -> str:
    """The line of example ``idx`` (class ``label``) certified in ``seconds``."""
    correct = int(certificate.prediction == label)
    fields = (idx, label, certificate.prediction, repr(float(certificate.radius)), correct,
              str(datetime.timedelta(seconds=seconds)), repr(float(certificate.p_lower)),
              certificate.count, certificate.n)
    return "\t".join(map(str, fields)) + "\n"


def is_ours(path: Path) -> bool:
    """Whether ``path`` starts with this tool's header line."""
    with path.open("rb") as handle:
        return handle.read(len(HEADER) + 1) == (HEADER + "\n").encode()


# ---- the settings sidecar ------------------------------------------------------------------

def meta_path(path: Path) -> Path:
    """The settings sidecar of certify TSV ``path``: ``<path>.meta.json``."""
    return path.with_name(path.name + ".meta.json")


def read_meta(path: Path) -> dict[str, Any]:
    """The sidecar of certify TSV ``path``; a torn or foreign sidecar is a damaged file."""
    sidecar = meta_path(path)
    if not sidecar.is_file():
        raise store.DamagedFileError(path, f"its settings file {sidecar.name} is missing")
    try:
        meta = store.read_json(sidecar)
    except store.CorruptFileError as err:
        raise store.DamagedFileError(path, f"its settings file {sidecar.name} does not parse ({err})") from None
    if not isinstance(meta, dict) or "n" not in meta or "sigma" not in meta:
        raise store.DamagedFileError(path, f"its settings file {sidecar.name} holds no certify settings")
    return meta


def write_meta(path: Path, meta: Mapping[str, Any]) -> None:
    """Write the sidecar of ``path`` atomically."""
    store.atomic_write_bytes(meta_path(path), json.dumps(dict(meta), indent=1).encode())


def tsv_digest(path: Path) -> dict[str, Any]:
    """``{"size", "sha256"}`` of ``path``: the sidecar's ``complete`` entry."""
    return {"size": path.stat().st_size, "sha256": store.sha256_file(path)}


def check_certify_output(path: str | Path) -> None:
    """A certify TSV that was completed must still be what was written (size and digest kept in
    its sidecar's ``complete`` entry); raises :class:`rs_lib.store.DamagedFileError` if not."""
    path = Path(path)
    complete = read_meta(path).get("complete")
    if complete is not None and tsv_digest(path) != complete:
        raise store.DamagedFileError(path, f"differs from the file completed earlier ({complete['size']} "
                                     f"bytes, now {path.stat().st_size}): truncated or edited")


def drop_torn_line(path: Path) -> str:
    """Cut a last line left without its newline by a kill mid-write (of our own, checked TSV);
    return the remaining text."""
    text = path.read_text(encoding="utf-8")
    if text and not text.endswith("\n"):
        keep = text.rfind("\n") + 1
        with path.open("r+b") as handle:
            handle.truncate(len(text[:keep].encode("utf-8")))
        text = text[:keep]
    return text


# ---- reading and merging -------------------------------------------------------------------

def read_certify_tsv(paths: str | Path | Iterable[str | Path]) -> pd.DataFrame:
    """Read one or several certify TSVs (ours or the reference's) into one frame sorted by idx.

    The reference columns are required; ``p_lower``, ``count`` and ``n`` are kept when present.
    ``time`` becomes float seconds whether written as seconds or as ``H:MM:SS.ffffff``.  A last
    line torn by a kill is ignored; an idx present in two files (overlapping shards) is an error.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    frames = [_read_one_tsv(Path(p)) for p in paths]
    if not frames:
        raise ValueError("paths must name at least one certify TSV")
    frame = pd.concat(frames, ignore_index=True)
    repeated = frame["idx"][frame["idx"].duplicated()].unique()
    if len(repeated):
        raise ValueError(f"idx {list(repeated[:10])} appear in more than one row; "
                         "shards must be disjoint")
    return frame.sort_values("idx", kind="stable").reset_index(drop=True)


def _read_one_tsv(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise ValueError(f"certify TSV {str(path)!r} does not exist")
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    header_width = len(lines[0].split("\t"))
    if not text.endswith("\n") and len(lines) > 1 and len(lines[-1].split("\t")) < header_width:
        text = "\n".join(lines[:-1]) + "\n"          # torn last line of a killed run
    frame = pd.read_csv(io.StringIO(text), sep="\t")
    missing = [c for c in TSV_COLUMNS if c != "time" and c not in frame.columns]
    if missing:
        raise ValueError(f"{str(path)!r} lacks the certify columns {missing}")
    if "time" in frame.columns and not pd.api.types.is_numeric_dtype(frame["time"]):
        frame["time"] = pd.to_timedelta(frame["time"]).dt.total_seconds()
    frame["radius"] = frame["radius"].astype(float)
    return frame


def merge_certify_tsv(paths: Iterable[str | Path], out_path: str | Path) -> pd.DataFrame:
    """Merge shard TSVs into one file at ``out_path`` (sorted by idx, full precision); return it.

    The merged file is for reading; it has no settings file, so resumes go to the shard files.
    An existing ``out_path`` is replaced only if it is an earlier merge (a certify TSV without a
    settings file); anything else is refused and left untouched.  The write is atomic.
    """
    target = Path(out_path)
    if target.is_dir():
        raise ValueError(f"out_path {str(target)!r} is a directory; give a file path for the merged TSV")
    if target.exists():
        ours = is_ours(target)
        if not ours or meta_path(target).exists():
            what = "a certify shard with its settings file" if ours else "not a certify TSV"
            raise ValueError(f"out_path {str(target)!r} exists and is {what}; it was left untouched: "
                             "choose another out_path")
    frame = read_certify_tsv(list(paths))
    times = frame["time"].map(lambda s: str(datetime.timedelta(seconds=float(s)))) \
        if "time" in frame.columns else None
    out = frame.copy()
    if times is not None:
        out["time"] = times
    text = out.to_csv(sep="\t", index=False, float_format=lambda v: repr(float(v)))
    store.atomic_write_bytes(target, text.encode("utf-8"))
    return frame
