"""One seaborn theme and one function per figure type used by the notebooks."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

THEME = dict(style="whitegrid", context="notebook", palette="colorblind")


def set_theme() -> None:
    """The book's single look (call once at the top of each notebook): the seaborn theme of every
    figure, and tables shown as a reader sees them (:func:`rs_lib.report.use_reader_tables`)."""
    from .report import use_reader_tables

    use_reader_tables()
    sns.set_theme(**THEME, rc={"figure.dpi": 110, "savefig.dpi": 110, "axes.titleweight": "bold",
                               "figure.figsize": (7.0, 4.0)})


#: The text column of the built book at a 1280 px window (book/_static/reader.css), in CSS px, and
#: the smallest font a reader should meet there, in CSS pt (1 pt = 96/72 px).
PAGE_WIDTH_PX = 990
MIN_FONT_PT = 9.0


def readable(fig, *, dpi: float | None = None, page_width_px: float = PAGE_WIDTH_PX,
             min_pt: float = MIN_FONT_PT):
    """Enlarge every text of ``fig`` (ticks, labels, legends, titles, notes) that would print below
    ``min_pt`` once the image is scaled to the page's text width, and return ``fig``.

    A figure whose saved (tight) image is ``w`` inches wide at ``dpi`` is an image of ``w·dpi`` px; the page shows it at
    ``min(1, page_width_px / (w·dpi))`` of that, so a font of ``s`` pt appears at
    ``s · dpi/96 · scale`` CSS pt."""
    dpi = fig.dpi if dpi is None else dpi
    # The notebook saves the figure's tight bounding box: a legend outside the axes widens the image.
    tight = fig.get_tightbbox(fig.canvas.get_renderer())
    width_px = max(fig.get_figwidth(), tight.width) * dpi
    shown = min(1.0, page_width_px / width_px) * dpi / 96.0
    smallest = min_pt / shown
    for ax in fig.axes:  # ticks are re-created on drawing from the axis' tick parameters
        for axis in (ax.xaxis, ax.yaxis):
            labels = [t for t in axis.get_ticklabels(which="both") if t.get_text()] or axis.get_ticklabels()
            if labels and labels[0].get_fontsize() < smallest:
                axis.set_tick_params(which="both", labelsize=smallest)
    for text in fig.findobj(lambda a: hasattr(a, "get_fontsize") and hasattr(a, "set_fontsize")
                            and hasattr(a, "get_text")):
        if text.get_text() and text.get_fontsize() < smallest:
            text.set_fontsize(smallest)
    return fig


def scale_note(profile: str, settings: Mapping, keys: list[str], paper: str) -> str:
    """One line saying which profile and settings produced a figure, and the paper's setting."""
    ours = ", ".join(f"{k}={settings[k]}" for k in keys if k in settings)
    return f"Produced with profile '{profile}': {ours}. Paper setting: {paper}."


#: Every method label the book plots, per paper, in a fixed order: each keeps one colour of the
#: colour-blind palette on every page (the two lists are never in the same figure).
METHOD_LABELS: tuple[tuple[str, ...], ...] = (
    ("Standard", "AT", "Fast AT", "Fast AT (no random init)", "Fast AT (2-step)", "Fast AT (GradAlign)",
     "TRADES", "Fast TRADES", "Fast TRADES (2-step)", "Backward Smoothing"),
    ("Gaussian", "Stability training", "SmoothAdv", "MACER", "Consistency", "SmoothMix"),
)


def label_colours(labels) -> dict:
    """One colour per label (duplicates once): a method of :data:`METHOD_LABELS` gets its fixed
    colour, so it looks the same on every page; other labels take the palette's colours in order."""
    labels = list(dict.fromkeys(labels))
    palette = sns.color_palette("colorblind", n_colors=10)
    fixed = {label: palette[i % 10] for group in METHOD_LABELS for i, label in enumerate(group)}
    free = iter([c for c in palette if c not in {fixed[l] for l in labels if l in fixed}] * (len(labels) + 1))
    return {label: fixed[label] if label in fixed else next(free) for label in labels}


def smooth(values: pd.Series, window: int) -> pd.Series:
    """Centred rolling mean used for per-iteration curves."""
    return values.rolling(max(1, window), min_periods=1, center=True).mean()


def learning_curves(iters: Mapping[str, pd.DataFrame], epochs: Mapping[str, pd.DataFrame], *,
                    loss: str = "loss", val: str = "val_clean_acc", window: int = 25):
    """Left: smoothed per-iteration training loss; right: per-epoch validation accuracy."""
    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(11, 4))
    for label, frame in iters.items():
        ax_loss.plot(frame["iter"], smooth(frame[loss], window), label=label)
    ax_loss.set(xlabel="iteration", ylabel=f"training {loss} (rolling mean of {window})", title="training loss")
    for label, frame in epochs.items():
        ax_val.plot(frame["epoch"] + 1, frame[val], marker="o", label=label)
    ax_val.set(xlabel="epoch", ylabel=val.replace("_", " "), title="validation")
    ax_val.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    return readable(fig)


# ------------------------------------------------------------------------------------------
# Randomized smoothing (SmoothAdv, SmoothMix chapters)
# ------------------------------------------------------------------------------------------

Curve = tuple  # (radii, values): two equal-length sequences


def scale_caption(fig, text: str, *, y: float = -0.04) -> None:
    """Put the SCALE line (``scale_note``) under a figure."""
    fig.text(0.01, y, text, fontsize="x-small", wrap=True, va="top")
    readable(fig)


def accuracy_vs_radius(panels: Mapping[str, Mapping[str, Curve]], *, ylabel: str = "certified accuracy",
                       xlabel: str = "l2 radius", marker_max: int = 15, sharey: bool = True,
                       ncols: int | None = None):
    """One panel per entry of ``panels`` (title -> {label: (radii, accuracy)}), Cohen et al. Fig. 7 /
    SmoothAdv Fig. 1 style, ``ncols`` panels per row (default: all in one row).  Curves with more
    than ``marker_max`` points are drawn as lines, shorter ones (paper tables, attack radii) with
    markers; labels starting with 'envelope' are black dashed, labels starting with 'empirical'
    dotted; a label keeps its colour across panels."""
    import math

    import numpy as np

    ncols = ncols or len(panels)
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 3.9 * nrows), sharey=sharey, squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    colors = label_colours(label for curves in panels.values() for label in curves)
    for ax, (title, curves) in zip(axes.flat, panels.items()):
        for label, (radii, values) in curves.items():
            radii, values = np.asarray(radii, dtype=float), np.asarray(values, dtype=float)
            style = dict(label=label, lw=1.6, color=colors[label])
            if str(label).startswith("envelope"):
                style.update(color="black", ls="--", lw=2.0)
            elif str(label).startswith("empirical"):
                style.update(ls=":", marker="o", ms=4)
            if len(radii) <= marker_max and "marker" not in style:
                style.update(marker="o", ms=4)
            ax.plot(radii, values, **style)
        ax.set(title=title, xlabel=xlabel, ylabel=ylabel, ylim=(0, 1.02))
        ax.legend(fontsize="x-small", loc="upper right")
    fig.tight_layout()
    return readable(fig)


def metric_by_method(frame: pd.DataFrame, *, value: str, method: str = "method", sigma: str = "sigma",
                     panel: str = "source", ylabel: str | None = None):
    """Grouped bars of ``value`` per method (hue) and sigma (x), one panel per ``panel`` value
    (e.g. ours on Fashion-MNIST beside the paper's MNIST table; SmoothMix Tables 1-3 as bars).
    Panels do not share y: they come from different datasets and scales."""
    sources = list(dict.fromkeys(frame[panel]))
    fig, axes = plt.subplots(1, len(sources), figsize=(6.2 * len(sources), 3.9), squeeze=False)
    for ax, source in zip(axes[0], sources):
        part = frame[frame[panel] == source]
        order = list(dict.fromkeys(frame[method]))
        sns.barplot(part, x=sigma, y=value, hue=method, ax=ax, hue_order=order, palette=label_colours(order))
        ax.set(title=str(source), xlabel="σ", ylabel=ylabel or value)
        ax.legend(fontsize="x-small", loc="upper left")
    fig.tight_layout()
    return readable(fig)


def interpolation_paths(ratios, paths: list[Mapping], *, ylabel: str = "smoothed confidence F̂"):
    """SmoothMix Fig. 2: F̂ of the true class and of the adversarial point's class along
    (1 − λ)x + λx̃, one panel per path (``title``, ``true`` and ``other`` arrays, ``other_label``)."""
    import math

    cols = 2 if len(paths) == 4 else len(paths)
    rows = math.ceil(len(paths) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.4 * rows), sharey=True, squeeze=False)
    for ax, path in zip(axes.flat, paths):
        ax.plot(ratios, path["true"], marker="o", ms=3, label="true class")
        ax.plot(ratios, path["other"], marker="s", ms=3, label=path.get("other_label", "adversarial class"))
        ax.axvline(0.5, color="grey", lw=0.8, ls=":")
        ax.set(title=path["title"], xlabel="mixing ratio λ", ylabel=ylabel, ylim=(0, 1.02))
        ax.legend(fontsize="x-small")
    fig.tight_layout()
    return readable(fig)


def ratio_histograms(ratios: Mapping[str, "object"], *, bins: int = 20, xlabel: str = "equal-confidence mixing ratio"):
    """SmoothMix Fig. 5: histograms of the equal-confidence mixing ratios per model (NaN dropped)."""
    import numpy as np

    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    edges = np.linspace(0, 1, bins + 1)
    for label, values in ratios.items():
        values = np.asarray(values, dtype=float)
        values = values[np.isfinite(values)]
        if values.size == 0:
            continue
        ax.hist(values, bins=edges, alpha=0.55, label=f"{label} (n={values.size})", density=True)
    ax.set(xlabel=xlabel, ylabel="density", title="Equal-confidence mixing ratios")
    ax.legend(fontsize="small")
    fig.tight_layout()
    return readable(fig)


# ------------------------------------------------------------------------------------------
# Backward Smoothing chapter: its figures, and the summaries their tables and readings quote
# ------------------------------------------------------------------------------------------

#: Per-epoch validation columns of the catastrophic-overfitting signature (BS Fig. 5).
CO_METRICS = {"val_clean_acc": "clean", "val_fgsm_acc": "FGSM", "val_pgd_acc": "PGD"}


def _epoch_axis(frame: pd.DataFrame) -> pd.Series:
    """Fractional epochs of per-iteration rows (iterations of epoch 0 = iterations per epoch)."""
    per_epoch = max(1, int((frame["epoch"] == frame["epoch"].min()).sum()))
    return (frame["iter"] - frame["iter"].min()) / per_epoch


def loss_increment(iters: Mapping[str, pd.DataFrame], *, columns: Mapping[str, str] | None = None,
                   window: int = 25):
    """BS Fig. 1: smoothed per-iteration loss increment of each run, one panel per column.

    Default panels: ``ce_increment`` = CE(f(x'), y) − CE(f(x), y) (the paper's ΔL, comparable across
    methods) and ``increment`` = the method's own inner objective at x' minus at its start point.
    A run without a column is left out of that panel. The dashed line is ΔL = 0: below it the attack
    lowered the loss it was meant to raise.
    """
    columns = dict(columns or {"ce_increment": "CE(x') − CE(x)",
                               "increment": "own objective: end − start"})
    fig, axes = plt.subplots(1, len(columns), figsize=(4.6 * len(columns), 4), sharey=True, squeeze=False)
    colours = label_colours(iters)
    for ax, (column, title) in zip(axes[0], columns.items()):
        for label, frame in iters.items():
            if column in frame:
                ax.plot(_epoch_axis(frame), smooth(frame[column], window), label=label, lw=1.2,
                        color=colours[label])
        ax.axhline(0.0, color="black", lw=0.8, ls="--")
        ax.set(xlabel="epoch", title=title)
    axes[0][0].set_ylabel(f"loss increment\n(rolling mean of {window} iterations)")
    handles = {h.get_label(): h for ax in axes[0] for h in ax.get_lines() if not h.get_label().startswith("_")}
    fig.tight_layout()
    # outside the panels, so that no curve is hidden behind it
    fig.legend(list(handles.values()), list(handles), fontsize="small", loc="center left",
               bbox_to_anchor=(1.0, 0.5), frameon=False)
    return readable(fig)


def overfitting_curves(epochs: Mapping[str, pd.DataFrame], *, metrics: Mapping[str, str] = CO_METRICS,
                       ncols: int = 3):
    """BS Fig. 5: per-epoch validation accuracy (clean, FGSM, PGD) of each run, one panel per run.
    Catastrophic overfitting shows as FGSM accuracy rising above clean accuracy while PGD falls to 0."""
    n = len(epochs)
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.3 * nrows), sharey=True, squeeze=False)
    for ax, (label, frame) in zip(axes.flat, epochs.items()):
        for column, name in metrics.items():
            if column in frame:
                ax.plot(frame["epoch"] + 1, frame[column], marker="o", ms=3, label=name)
        ax.set(title=label, xlabel="epoch", ylim=(0, 1))
        ax.title.set_fontsize("small")
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("validation accuracy")
    axes.flat[0].legend(fontsize="small")
    fig.tight_layout()
    return readable(fig)


def increment_summary(frame: pd.DataFrame, column: str = "ce_increment") -> dict[str, float]:
    """The numbers behind BS Fig. 1 for one run: the lowest epoch mean of ``column``, its mean over
    the last epoch and the fraction of last-epoch iterations where it is negative."""
    if column not in frame:
        return {"min epoch mean": float("nan"), "last epoch mean": float("nan"), "last epoch: share < 0": float("nan")}
    by_epoch = frame.groupby("epoch")[column].mean()
    last = frame[frame["epoch"] == frame["epoch"].max()][column]
    return {"min epoch mean": float(by_epoch.min()), "last epoch mean": float(last.mean()),
            "last epoch: share < 0": float((last < 0).mean())}


def collapsed(epochs: pd.DataFrame, *, threshold: float = 0.1, margin: float = 0.3) -> bool:
    """Catastrophic overfitting at the last epoch: PGD validation accuracy below ``threshold`` although
    clean accuracy is at least ``margin`` higher (a model that learned, but is not robust at all). The
    paper's other sign, FGSM accuracy above clean accuracy (Fig. 5), often but not always comes with it
    (:func:`fgsm_above_clean`)."""
    row = epochs.iloc[-1]
    return bool(row["val_pgd_acc"] < threshold and row["val_clean_acc"] - row["val_pgd_acc"] >= margin)


def fgsm_above_clean(epochs: pd.DataFrame) -> bool:
    """FGSM validation accuracy at least the clean one at the last epoch: the attack no longer finds
    the errors a single step should (BS Fig. 5; reference notes §7.1)."""
    row = epochs.iloc[-1]
    return bool(row["val_fgsm_acc"] >= row["val_clean_acc"])


def curvature_lines(frame: pd.DataFrame, *, log: bool = True):
    """BS Fig. 3: mean top input-Hessian eigenvalue against the epoch of the checkpoint, one line per
    point (clean, random, backward-smoothed), one panel per objective (columns) and run (rows).
    ``frame`` needs columns epoch, eigenvalue, point, objective and run."""
    objectives = list(dict.fromkeys(frame["objective"]))
    runs = list(dict.fromkeys(frame["run"]))
    fig, axes = plt.subplots(len(runs), len(objectives), figsize=(4.6 * len(objectives), 3.4 * len(runs)),
                             squeeze=False)
    for i, run in enumerate(runs):
        for j, objective in enumerate(objectives):
            ax = axes[i][j]
            part = frame[(frame["run"] == run) & (frame["objective"] == objective)]
            for point, rows in part.groupby("point", sort=False):
                ax.plot(rows["epoch"] + 1, rows["eigenvalue"], marker="o", label=point)
            if log and (part["eigenvalue"] > 0).all() and len(part):
                ax.set_yscale("log")
            ax.set(title=f"{run}: {objective}", xlabel="epoch (checkpoint)", ylabel="top eigenvalue")
            ax.title.set_fontsize("small")
    axes[0][0].legend(fontsize="small")
    fig.tight_layout()
    return readable(fig)


def tradeoff(frame: pd.DataFrame, *, x: str = "natural", y: str = "robust", method: str = "method",
             param: str = "beta"):
    """BS Fig. 4: robust against natural accuracy. Methods with several rows (a sweep over ``param``)
    are lines with each point annotated by its ``param``; the others single markers."""
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    colours = label_colours(frame[method])
    for name, rows in frame.groupby(method, sort=False):
        rows = rows.sort_values(x)
        if len(rows) > 1:
            line, = ax.plot(rows[x], rows[y], marker="o", label=name, color=colours[name])
            for _, row in rows.iterrows():
                ax.annotate(f"{param}={row[param]:g}", (row[x], row[y]), textcoords="offset points",
                            xytext=(4, 4), fontsize="x-small", color=line.get_color())
        else:
            ax.plot(rows[x], rows[y], marker="s", ls="none", ms=8, label=name, color=colours[name])
    ax.set(xlabel=f"{x} accuracy", ylabel=f"{y} accuracy")  # the notebook titles the figure
    ax.legend(fontsize="small")
    fig.tight_layout()
    return readable(fig)


def stability_boxes(frame: pd.DataFrame, *, x: str = "configuration", y: str = "robust",
                    hue: str = "checkpoint"):
    """BS Fig. 6 / arXiv Fig. 1: robust accuracy over seeds as box plots, every seed as a dot."""
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * frame[x].nunique() + 2), 4.2))
    sns.boxplot(frame, x=x, y=y, hue=hue, ax=ax, fliersize=0, width=0.6)
    sns.stripplot(frame, x=x, y=y, hue=hue, ax=ax, dodge=True, palette="dark:black", size=4, legend=False)
    ax.set(xlabel="", ylabel=f"{y} accuracy")
    # long configuration names ("method, step size") on two lines, so neighbours do not overlap
    labels = [",\n".join(textwrap.fill(part, 24) for part in t.get_text().split(", ", 1))
              for t in ax.get_xticklabels()]
    ax.set_xticks(ax.get_xticks(), labels, fontsize="small")
    fig.tight_layout()
    return readable(fig)


def captioned(frame: pd.DataFrame, scale: str, *, digits: int = 3, paper_setting: str | None = None) -> None:
    """Display a notebook table with its scale line (and the setting of the paper's numbers in it) under it."""
    from IPython.display import Markdown, display

    from .report import reader_table

    display(reader_table(frame, digits=digits))
    note = scale if paper_setting is None else f"{scale} Paper columns: {paper_setting}."
    display(Markdown(f"*{note}*"))
