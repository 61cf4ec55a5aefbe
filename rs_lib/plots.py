"""One seaborn theme and one function per figure type used by the notebooks."""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

THEME = dict(style="whitegrid", context="notebook", palette="colorblind")


def set_theme() -> None:
    """The book's single plotting theme (call once at the top of each notebook)."""
    sns.set_theme(**THEME, rc={"figure.dpi": 110, "savefig.dpi": 110, "axes.titleweight": "bold",
                               "figure.figsize": (7.0, 4.0)})


def scale_note(profile: str, settings: Mapping, keys: list[str], paper: str) -> str:
    """One line saying which profile and settings produced a figure, and the paper's setting."""
    ours = ", ".join(f"{k}={settings[k]}" for k in keys if k in settings)
    return f"Produced with profile '{profile}': {ours}. Paper setting: {paper}."


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
    return fig


def caption(fig, text: str) -> None:
    """Put ``text`` (the scale note) under the figure, below its axis labels."""
    fig.text(0.0, 0.0, text, ha="left", va="top", fontsize="x-small", wrap=True, transform=fig.transFigure)
