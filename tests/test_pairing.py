"""rs_lib.pairing (verdicts with standard errors, settings beside paired paper rows) and
paper.side_by_side's per-row columns (issue 13, items 6 and 16)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from rs_lib import pairing, paper


def test_paired_difference_is_the_mean_difference_with_sd_over_root_n():
    a, b = [1.0, 2.0, 4.0, 7.0], [0.5, 2.5, 3.0, 5.0]
    d = pairing.paired_difference(a, b)
    diffs = np.array(a) - np.array(b)
    assert d.mean == pytest.approx(diffs.mean()) and d.n == 4
    assert d.se == pytest.approx(diffs.std(ddof=1) / 2)
    assert math.isnan(pairing.paired_difference([1.0], [0.0]).se)
    with pytest.raises(ValueError, match="pair up"):
        pairing.paired_difference([1.0, 2.0], [1.0])


def test_paired_se_is_smaller_than_unpaired_when_the_pairs_share_their_noise():
    rng = np.random.default_rng(0)
    shared = rng.normal(size=200)
    a, b = shared + 0.1 + 0.05 * rng.normal(size=200), shared + 0.05 * rng.normal(size=200)
    paired, unpaired = pairing.paired_difference(a, b), pairing.independent_difference(a, b)
    assert paired.mean == pytest.approx(unpaired.mean)
    assert paired.se < unpaired.se / 5 and paired.clear and not unpaired.clear


def test_welch_standard_error():
    a, b = [1.0, 3.0, 5.0], [2.0, 2.0, 3.0, 5.0]
    d = pairing.independent_difference(a, b)
    assert d.se == pytest.approx(math.sqrt(np.var(a, ddof=1) / 3 + np.var(b, ddof=1) / 4))
    assert d.mean == pytest.approx(3.0 - 3.0)


def test_acr_difference_pairs_on_the_test_index_not_the_row_order():
    a = pd.DataFrame({"idx": [0, 1, 2], "radius": [0.5, 1.0, 0.0], "correct": [1, 1, 0]})
    b = pd.DataFrame({"idx": [2, 0, 1], "radius": [0.2, 0.5, 0.4], "correct": [1, 1, 0]})
    d = pairing.acr_difference(a, b)
    assert d.mean == pytest.approx(((0.5 - 0.5) + (1.0 - 0.0) + (0.0 - 0.2)) / 3)
    with pytest.raises(ValueError, match="same test points"):
        pairing.acr_difference(a, b.assign(idx=[5, 0, 1]))


def test_a_difference_within_two_standard_errors_is_not_called_clear():
    """SmoothMix's "larger η gives larger ACR": 0.752 vs 0.762 on 120 points is not a clear difference."""
    rng = np.random.default_rng(1)
    base = rng.uniform(0, 2, size=120) * (rng.uniform(size=120) > 0.3)
    other = np.clip(base + rng.normal(0.01, 0.3, size=120), 0, None)
    d = pairing.paired_difference(other, base)
    assert not d.clear and "within two standard errors" in pairing.describe(d)
    assert pairing.verdict(pairing.Difference(0.5, 0.1, 10)).startswith("**yes** (+0.500 ± 0.200 (2 SE), beyond")
    assert pairing.verdict(pairing.Difference(-0.5, 0.1, 10)).startswith("**no**")


def test_other_settings_states_what_a_paired_row_does_not_share():
    cpu_default = {"eta": 5.0, "step_size": 4.0, "steps": 2, "num_noise": 1}
    ours, theirs = pairing.other_settings(cpu_default, "eta")
    assert ours == "α 4, T 2, ε ∞, m 1" and theirs == "α 1, T 8, ε ∞, m 4"
    ours, theirs = pairing.other_settings({**cpu_default, "maxnorm": 2.0}, "alpha_T")
    assert ours == "η 5, ε 2, m 1" and theirs == "η 1, ε ∞, m 4"
    with pytest.raises(ValueError, match="ablation"):
        pairing.other_settings(cpu_default, "sigma")


def test_side_by_side_keeps_per_row_columns_on_their_own_rows():
    """bs_stability's old merge on the method name alone put each Fast AT configuration's best run
    beside the other configuration's mean."""
    ours = pd.DataFrame({"method": ["Fast AT", "Fast AT", "Backward Smoothing"],
                         "configuration": ["α = ε", "α = 1.25ε", "BS"],
                         "best run": [43.4, 30.0, 50.0], "mean": [40.0, 20.0, 48.0]})
    table = pd.DataFrame({"method": ["Fast AT", "Backward Smoothing", "TRADES"], "best run": [46.3, 53.4, 52.0]})
    out = paper.side_by_side(ours, table, on="method", columns={"best run": "best run"}, scale="s",
                             paper_setting="p", keep=["configuration", "mean"])
    out = out[out["configuration"].notna()]
    assert len(out) == 3
    by = out.set_index("configuration")
    assert by.loc["α = ε", "best run (ours)"] == 43.4 and by.loc["α = ε", "mean"] == 40.0
    assert by.loc["α = 1.25ε", "best run (ours)"] == 30.0 and by.loc["α = 1.25ε", "mean"] == 20.0
    assert set(by["best run (paper)"]) == {46.3, 53.4}


def test_stacked_puts_ours_and_the_papers_on_two_rows_of_one_column_each():
    """The certified-accuracy tables of rs_comparison and rs_smoothmix_ablations ran past the text
    column at the cpu scale with a pair of columns per radius; stacked halves their width."""
    ours = pd.DataFrame({"method": ["A", "B"], "sigma": [0.25, 0.25], "acr": [0.4, 0.5], "r0.00": [70.0, 60.0],
                         "other settings (ours)": ["eta=5", "eta=5"], "note": ["x", "y"]})
    table = pd.DataFrame({"method": ["A", "C"], "sigma": [0.25, 0.25], "acr": [0.45, 0.6], "r0.00": [75.0, 65.0]})
    wide = paper.side_by_side(ours, table, on=["method", "sigma"], columns={"acr": "acr", "r0.00": "r0.00"},
                              scale="cpu", paper_setting="CIFAR-10", keep=["note"])
    wide["other settings (ours)"] = wide["method"].map({"A": "eta=5", "B": "eta=5"})
    wide["other settings (paper)"] = "eta=1"  # text on every row: it alone does not keep a row
    out = paper.stacked(wide, on=["method", "sigma"])
    assert list(out.columns) == ["method", "sigma", "source", "acr", "r0.00", "other settings", "note"]
    # A: both sources, ours first; B: ours only (not in the paper); C: the paper's only (not run here).
    assert list(zip(out["method"], out["source"])) == [("A", "ours"), ("A", "paper"), ("B", "ours"), ("C", "paper")]
    assert out["acr"].tolist() == [0.4, 0.45, 0.5, 0.6] and out["r0.00"].tolist() == [70.0, 75.0, 60.0, 65.0]
    assert out.loc[0, "note"] == "x" and pd.isna(out.loc[1, "note"])  # a run's own column stays on its row
    assert out["other settings"].tolist()[:2] == ["eta=5", "eta=1"]
    assert out.attrs == {"scale": "cpu", "paper_setting": "CIFAR-10"}
    assert len(out.columns) < len(wide.columns)
    with pytest.raises(ValueError, match="pair"):
        paper.stacked(ours, on="method")
