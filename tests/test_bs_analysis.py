"""Backward Smoothing chapter analyses: the Fig. 3 curvature probes (rs_lib.hessian) and the Fig. 1 / Fig. 5
summaries and figures (rs_lib.plots), on tiny models and hand-made frames."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import pytest
import torch
from torch import nn

from rs_lib import hessian, plots


def _relu_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 3)).eval()


def _batch(n: int = 6):
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 1, 4, 4, generator=g), torch.randint(0, 3, (n,), generator=g)


def test_smoothing_points_lie_where_the_paper_puts_them():
    model, (x, _) = _relu_net(), _batch()
    pts = hessian.smoothing_points(model, x, eps=0.1, step_size=0.1, gamma=1.0,
                                   generator=torch.Generator().manual_seed(0))
    assert torch.equal(pts["clean"], x)
    assert (pts["random"] - x).abs().max() <= 0.1 + 1e-7  # Fast TRADES start: in the ball, not clamped
    delta = pts["backward-smoothed"] - x
    assert delta.abs().max() <= 0.1 + 1e-7
    assert pts["backward-smoothed"].min() >= 0 and pts["backward-smoothed"].max() <= 1
    assert delta.abs().max() > 0  # one signed step moves the point


def test_kl_and_ce_have_the_same_input_curvature_for_a_relu_net():
    """J^T (diag q - q q^T) J for both objectives of a piecewise-linear network (why cpu probes KL only)."""
    model, (x, y) = _relu_net(), _batch()
    rows = hessian.smoothing_curvature(model, x, y, hessian.Probe(eps=0.1, step_size=0.1, objectives=["kl", "ce"], iters=50))
    by = {(r["objective"], r["point"]): r["eigenvalue"] for r in rows}
    assert set(by) == {(o, p) for o in ("kl", "ce") for p in hessian.POINTS}
    for point in hessian.POINTS:
        assert by[("kl", point)] == pytest.approx(by[("ce", point)], rel=1e-4)
        assert by[("kl", point)] > 0


def test_smoothing_curvature_matches_the_explicit_hessian_and_restores_mode():
    model, (x, y) = _relu_net(), _batch(1)
    model.train()
    rows = hessian.smoothing_curvature(model, x, y, hessian.Probe(eps=0.1, step_size=0.1, objectives=["ce"], iters=200))
    assert model.training
    model.eval()
    clean = next(r["eigenvalue"] for r in rows if r["point"] == "clean")
    flat = x.flatten()
    H = torch.autograd.functional.hessian(
        lambda v: nn.functional.cross_entropy(model(v.view(1, 1, 4, 4)), y, reduction="sum"), flat)
    assert clean == pytest.approx(torch.linalg.eigvalsh(H).max().item(), rel=1e-3)


def test_smoothing_curvature_is_reproducible_for_a_seed():
    model, (x, y) = _relu_net(), _batch()
    a = hessian.smoothing_curvature(model, x, y, hessian.Probe(eps=0.1, step_size=0.1, iters=10, seed=3))
    b = hessian.smoothing_curvature(model, x, y, hessian.Probe(eps=0.1, step_size=0.1, iters=10, seed=3))
    assert a == b


def test_curvature_along_training_has_rows_per_epoch_point_and_weight_space():
    (x, y) = _batch()
    nets = {0: _relu_net(0), 3: _relu_net(1)}
    rows = hessian.curvature_along_training(lambda e: nets[e], [0, 3], x, y, hessian.Probe(eps=0.1, step_size=0.1, iters=5),
                                            weight_space=True, weight_iters=20)
    frame = pd.DataFrame(rows)
    assert sorted(frame["epoch"].unique()) == [0, 3]
    assert len(frame) == 2 * 2 * len(hessian.POINTS)
    weights = frame[frame["objective"] == "ce (weights)"].set_index(["epoch", "point"])["eigenvalue"]
    assert set(weights.index.get_level_values("point")) == set(hessian.POINTS)  # Fig. 3's three points
    points = hessian.smoothing_points(nets[3].eval(), x, eps=0.1, step_size=0.1,
                                      generator=torch.Generator().manual_seed(0))
    for name in ("random", "backward-smoothed"):
        direct = hessian.weight_hessian_top_eigenvalue(nets[3], points[name], y, iters=20,
                                                       generator=torch.Generator().manual_seed(0))
        assert weights[(3, name)] == pytest.approx(direct, rel=1e-9)
    assert weights[(3, "random")] != pytest.approx(weights[(3, "clean")], rel=1e-6)


@pytest.mark.parametrize("kwargs, name", [({"objectives": ["mse"]}, "objectives"), ({"objectives": []}, "objectives"),
                                          ({"iters": 0}, "iters"), ({"eps": -1.0}, "eps")])
def test_bad_arguments_raise_value_error_naming_them(kwargs, name):
    model, (x, y) = _relu_net(), _batch()
    call = {"eps": 0.1, "step_size": 0.1, **kwargs}
    with pytest.raises(ValueError, match=name):
        hessian.smoothing_curvature(model, x, y, hessian.Probe(**call))


# ------------------------------------------------------------------ Fig. 1 / Fig. 5 summaries


def _iters(values_per_epoch):
    rows, it = [], 0
    for epoch, values in enumerate(values_per_epoch):
        for v in values:
            rows.append({"epoch": epoch, "iter": it, "ce_increment": v, "increment": v / 2})
            it += 1
    return pd.DataFrame(rows)


def test_increment_summary_reports_lowest_epoch_mean_and_negative_share():
    s = plots.increment_summary(_iters([[0.4, 0.2], [-0.1, -0.3, 0.2, -0.2]]))
    assert s["min epoch mean"] == pytest.approx(-0.1)
    assert s["last epoch mean"] == pytest.approx(-0.1)
    assert s["last epoch: share < 0"] == pytest.approx(0.75)
    assert pd.isna(plots.increment_summary(_iters([[0.1]]), "missing")["min epoch mean"])


def _epochs(clean, fgsm, pgd):
    return pd.DataFrame({"epoch": range(len(clean)), "val_clean_acc": clean, "val_fgsm_acc": fgsm, "val_pgd_acc": pgd})


def test_collapse_needs_a_model_that_learned_but_lost_pgd_accuracy():
    assert plots.collapsed(_epochs([0.6, 0.66], [0.5, 0.77], [0.3, 0.0]))  # §7.1's fgsm0 at 0.3
    assert not plots.collapsed(_epochs([0.1, 0.1], [0.1, 0.1], [0.1, 0.05]))  # never learned
    assert not plots.collapsed(_epochs([0.8, 0.8], [0.8, 0.83], [0.5, 0.49]))  # robust
    assert plots.fgsm_above_clean(_epochs([0.6, 0.66], [0.5, 0.77], [0.3, 0.0]))
    assert not plots.fgsm_above_clean(_epochs([0.76], [0.63], [0.04]))


def test_chapter_figures_draw_every_run():
    iters = {"a": _iters([[0.1, -0.2], [0.3, 0.1]]), "b": _iters([[0.2, 0.2], [0.1, 0.0]])}
    epochs = {"a": _epochs([0.5, 0.6], [0.4, 0.7], [0.2, 0.0]), "b": _epochs([0.5, 0.6], [0.3, 0.4], [0.2, 0.3])}
    fig = plots.loss_increment(iters, window=1)
    assert [len(ax.lines) for ax in fig.axes] == [3, 3]  # two runs + the zero line per panel
    [legend] = fig.legends                               # one legend for both panels, outside them
    assert [t.get_text() for t in legend.get_texts()] == ["a", "b"]
    assert [ax.get_legend() for ax in fig.axes] == [None, None]
    fig = plots.overfitting_curves(epochs)
    assert sum(len(ax.lines) for ax in fig.axes if ax.get_visible()) == 6
    curv = pd.DataFrame([{"run": r, "objective": "kl", "point": p, "epoch": e, "eigenvalue": 1.0 + e}
                         for r in ("a", "b") for p in hessian.POINTS for e in (0, 1)])
    assert len(plots.curvature_lines(curv).axes) == 2
    trade = pd.DataFrame({"method": ["BS", "BS", "Fast AT"], "beta": [2.0, 6.0, float("nan")],
                          "natural": [0.8, 0.7, 0.75], "robust": [0.3, 0.4, 0.1]})
    assert len(plots.tradeoff(trade).axes[0].lines) == 2
    boxes = pd.DataFrame({"configuration": ["x", "x", "y", "y"], "checkpoint": ["best", "last"] * 2,
                          "robust": [0.1, 0.2, 0.3, 0.4]})
    plots.stability_boxes(boxes)
    plt.close("all")


def test_stability_box_labels_do_not_overlap():
    names = ["Fast AT, α = ε (63.8/255)", "Fast AT, α = 1.25ε (79.7/255)", "Backward Smoothing, α = ε"]
    boxes = pd.DataFrame({"configuration": [n for n in names for _ in range(2)],
                          "checkpoint": ["best", "last"] * 3, "robust": [0.1, 0.2, 0.3, 0.4, 0.5, 0.5]})
    with plt.rc_context():                               # the book's theme (its font sizes), undone after
        plots.set_theme()
        fig = plots.stability_boxes(boxes)
        fig.canvas.draw()
        boxes_px = [t.get_window_extent(fig.canvas.get_renderer()) for t in fig.axes[0].get_xticklabels()]
    assert [t.get_text().replace("\n", " ") for t in fig.axes[0].get_xticklabels()] == names
    assert all(a.x1 < b.x0 for a, b in zip(boxes_px, boxes_px[1:]))
    plt.close(fig)
