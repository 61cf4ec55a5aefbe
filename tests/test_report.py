"""rs_lib.report: tables as a reader sees them (no index, no NaN) and the shared training summary."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from rs_lib import report


def _run(epochs, acc, seconds, forward):
    return SimpleNamespace(summary={"epochs": epochs, "last": {"val_clean_acc": acc},
                                    "train_time_total": seconds,
                                    "passes_per_iteration": {"forward": forward, "backward": 1}})


def test_reader_table_has_no_index_column_and_a_dash_for_nan_explained_in_the_caption():
    frame = pd.DataFrame({"ours": [0.12345, np.nan], "paper": [np.nan, 45.2]}, index=["AT", "BS"])
    html = report.reader_table(frame, digits=2, caption="Table 2.").to_html()
    assert "nan" not in html.lower().replace("dataframe", "")
    assert html.count(report.DASH) >= 3  # two cells and the note
    assert "Table 2. " + report.DASH_NOTE in html
    assert ">AT<" in html and ">0.12<" in html
    assert "row_heading" not in html and "index_name" not in html  # no index column


def test_reader_table_drops_a_plain_range_index_and_flattens_column_levels():
    frame = pd.DataFrame([[1.0, 2.0]], columns=pd.MultiIndex.from_tuples([("best", "BS"), ("last", "BS")]))
    flat = report._flat(frame)
    assert list(flat.columns) == ["best BS", "last BS"]
    assert report.DASH_NOTE not in report.reader_table(frame).to_html()
    named = pd.DataFrame({"acr": [0.5]}, index=pd.MultiIndex.from_tuples([("SmoothMix", 0.25)],
                                                                          names=["method", "sigma"]))
    assert list(report._flat(named).columns) == ["method", "sigma", "acr"]


def test_reader_table_column_digits_round_those_columns_only():
    """rs_comparison's certified accuracies in % read at one decimal beside the ACR's three."""
    frame = pd.DataFrame({"acr": [0.41234], "r0.00": [71.66667], "r0.25": [float("nan")]})
    html = report.reader_table(frame, column_digits={"r0.00": 1, "r0.25": 1}).to_html()
    assert "0.412" in html and "71.7" in html and "71.667" not in html and report.DASH in html
    with pytest.raises(ValueError, match="column_digits"):
        report.reader_table(frame, column_digits={"r9": 1})
    with pytest.raises(ValueError, match="column_digits"):
        report.reader_table(frame, column_digits={"acr": -1})


def test_reader_table_rejects_what_is_not_a_frame_and_bad_digits():
    with pytest.raises(ValueError, match="frame must be a pandas DataFrame"):
        report.reader_table([1, 2])
    with pytest.raises(ValueError, match="digits"):
        report.reader_table(pd.DataFrame({"a": [1]}), digits=-1)


def test_train_table_one_row_per_run_in_order_with_joined_tuple_labels():
    runs = {("Gaussian", 0.25): _run(3, 0.91, 12.5, 1), ("SmoothMix", 0.25): _run(3, 0.88, 40.0, 5)}
    table = report.train_table(runs)
    assert list(table["run"]) == ["Gaussian, 0.25", "SmoothMix, 0.25"]
    assert list(table["forward passes / iter"]) == [1, 5]
    assert table.loc[1, "train time (s)"] == 40.0 and table.loc[0, "val clean acc (last)"] == 0.91


def test_train_table_rejects_an_empty_mapping_and_a_run_without_summary():
    with pytest.raises(ValueError, match="non-empty mapping"):
        report.train_table({})
    with pytest.raises(ValueError, match=r"runs\['x'\] is not a stored run"):
        report.train_table({"x": object()})


@pytest.mark.parametrize("ours, paper, se, expected", [
    (1.5, 0.2, None, report.REPRODUCED),
    (-1.5, 0.2, None, report.NOT_REPRODUCED),
    (1.5, 0.2, 1.0, report.NOT_REPRODUCED),   # within two standard errors
    (3.0, 0.2, 1.0, report.REPRODUCED),
    (None, 0.2, None, report.NOT_COMPARABLE),
    (float("nan"), 0.2, None, report.NOT_COMPARABLE),
])
def test_sign_verdict_needs_the_papers_sign_beyond_two_standard_errors(ours, paper, se, expected):
    assert report.sign_verdict(ours, paper, se=se) == expected


def test_ratio_verdict_and_claims_table():
    assert report.not_worse_verdict(-0.4, 1.0) == report.REPRODUCED
    assert report.not_worse_verdict(-2.5, 1.0) == report.NOT_REPRODUCED
    assert report.not_worse_verdict(-2.5, 1.0, se=1.0) == report.REPRODUCED
    # One-sided: more robust than the reference by any margin is "as robust as" it (the cpu build's
    # BS - TRADES = +1.2 read "not reproduced" under the old two-sided rule).
    assert report.not_worse_verdict(+1.2, 1.0) == report.REPRODUCED
    assert report.not_worse_verdict(+25.0, 1.0) == report.REPRODUCED
    assert report.not_worse_verdict(-1.0, 1.0) == report.REPRODUCED
    assert report.not_worse_verdict(-1.01, 1.0) == report.NOT_REPRODUCED
    assert report.not_worse_verdict(float("nan"), 1.0) == report.NOT_COMPARABLE
    assert report.ratio_verdict(3.2, 2.94) == report.REPRODUCED
    assert report.ratio_verdict(1.5, 2.94) == report.NOT_REPRODUCED
    assert report.ratio_verdict(None, 2.94) == report.NOT_COMPARABLE
    rows = [report.claim("BS above Fast AT", "Table 2", 6.2, None, "cpu", report.NOT_COMPARABLE)]
    table = report.claims_table(rows)
    assert list(table.columns)[:3] == ["claim", "paper's figure/table", "paper"] and table.loc[0, "ours"] is None
    with pytest.raises(ValueError, match="verdict"):
        report.claim("x", "T", 1.0, 1.0, "cpu", "maybe")


def test_count_verdict_needs_every_cell_of_the_grid():
    assert report.count_verdict(3, 3) == report.REPRODUCED
    assert report.count_verdict(2, 3) == report.NOT_REPRODUCED
    assert report.count_verdict(0, 0) == report.NOT_COMPARABLE
    with pytest.raises(ValueError, match="holds"):
        report.count_verdict(4, 3)


def test_readable_enlarges_only_the_fonts_that_would_print_below_9_pt_at_page_width():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rs_lib import plots

    fig, ax = plt.subplots(figsize=(18, 4), dpi=110)   # 1980 px and more: shown below half size
    ax.plot([0, 1], [0, 1], label="BS")
    ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5))  # outside: widens the image
    big = ax.set_title("title", fontsize=30)
    ax.tick_params(labelsize=5)
    plots.readable(fig)
    fig.canvas.draw()  # ticks re-created from the axis' parameters must stay readable
    width = max(18, fig.get_tightbbox(fig.canvas.get_renderer()).width)
    shown = min(1.0, plots.PAGE_WIDTH_PX / (width * 110)) * 110 / 96
    sizes = [t.get_fontsize() * shown for t in fig.findobj(matplotlib.text.Text) if t.get_text()]
    assert min(sizes) >= plots.MIN_FONT_PT - 1e-9
    assert big.get_fontsize() == 30
    plt.close(fig)


def test_a_method_keeps_its_colour_whatever_else_is_in_the_figure():
    from rs_lib import plots

    alone = plots.label_colours(["Backward Smoothing"])
    mixed = plots.label_colours(["TRADES", "my variant", "Backward Smoothing", "Standard"])
    assert alone["Backward Smoothing"] == mixed["Backward Smoothing"]
    assert len(set(mixed.values())) == 4  # the unknown label takes a colour no method in the figure has
    assert plots.label_colours(["SmoothMix", "Gaussian"])["SmoothMix"] != plots.label_colours(["Gaussian"])["Gaussian"]


def test_glue_value_formats_numbers_and_glues_a_dash_for_missing(monkeypatch):
    import myst_nb

    glued = {}
    monkeypatch.setattr(myst_nb, "glue", lambda name, value, display=True: glued.update({name: (value, display)}))
    report.glue_value("a", np.float64(3.14159), ".2f")
    report.glue_value("b", float("nan"), ".2f")
    report.glue_value("c", np.float64(2.5))
    report.glue_value("d", None)
    assert glued == {"a": ("3.14", False), "b": (report.DASH, False), "c": (2.5, False), "d": (report.DASH, False)}
    assert type(glued["c"][0]) is float
    with pytest.raises(ValueError, match="name"):
        report.glue_value("", 1.0)


def test_glue_table_glues_the_reader_table_with_its_scale_and_dash_note(monkeypatch):
    import myst_nb

    glued = {}
    monkeypatch.setattr(myst_nb, "glue", lambda name, value, display=True: glued.update({name: (value, display)}))
    report.glue_table("tab-x", pd.DataFrame({"a": [1.0, None]}), "Scale: smoke.", paper_setting="CIFAR-10")
    styler, display = glued["tab-x"]
    html = styler.to_html()
    assert display is False and "Scale: smoke. Paper columns: CIFAR-10." in html and report.DASH_NOTE in html
