"""The book-facing helpers of rs_lib.smoothing: certify_run (certificates cached in the run store),
summary_table, radius_cap, interpolation_confidence and equal_confidence_ratio."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats
from torch import nn

from helpers import certify_run
from rs_lib import attacks, smoothing, train


@pytest.fixture
def tiny_run(results_root):
    cfg = train.TrainConfig(method="gaussian", method_params={"sigma": 0.5}, dataset="synthetic", model="lenet",
                            epochs=1, n_train=64, n_val=32, batch_size=32, augment=False, schedule="constant")
    return train.run_training(cfg, experiment="test_certify_run", device="cpu", progress=False)


CERT = dict(n_points=5, n0=10, n=50, alpha=0.01, sigma=0.5, batch_size=64, seed=3, device="cpu", progress=False)


def test_certify_run_writes_tsv_in_run_dir_and_rereads_it_without_recomputing(tiny_run, monkeypatch):
    first = certify_run(tiny_run, **CERT)
    files = list(tiny_run.dir.path.glob("certify-*.tsv"))
    assert len(files) == 1 and len(first) == 5
    # test points spread over the split: every len // n_points-th index
    assert list(first["idx"]) == [0, 200, 400, 600, 800]

    def boom(*args, **kwargs):
        raise AssertionError("certify_dataset must not run for a finished file")

    monkeypatch.setattr(smoothing.dataset, "certify_dataset", boom)
    again = certify_run(tiny_run, **{**CERT, "batch_size": 7})  # batch size is not in the hash
    pd.testing.assert_frame_equal(first, again)


def test_certify_run_resumes_a_killed_file_to_the_same_rows(tiny_run):
    full = certify_run(tiny_run, **CERT)
    path = next(tiny_run.dir.path.glob("certify-*.tsv"))
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:3]) + lines[3][:5])          # two rows kept, a torn third
    meta_path = path.with_name(path.name + ".meta.json")         # killed before it completed:
    meta = json.loads(meta_path.read_text())                     # no completion record yet
    del meta["complete"]
    meta_path.write_text(json.dumps(meta))
    resumed = certify_run(tiny_run, **CERT)
    cols = ["idx", "label", "predict", "radius", "correct", "p_lower", "count", "n"]
    pd.testing.assert_frame_equal(full[cols], resumed[cols])


def test_certify_run_settings_change_the_cached_file(tiny_run):
    certify_run(tiny_run, **CERT)
    certify_run(tiny_run, **{**CERT, "n": 60})
    assert len(list(tiny_run.dir.path.glob("certify-*.tsv"))) == 2


@pytest.mark.parametrize("change, name", [({"n_points": 0}, "n_points"), ({"which": "middle"}, "which"),
                                          ({"alpha": 1.5}, "alpha"), ({"sigma": -1.0}, "sigma"),
                                          ({"split": "dev"}, "split"), ({"n_points": 10**6}, "n_points")])
def test_certify_run_rejects_bad_arguments(tiny_run, change, name):
    with pytest.raises(ValueError, match=name):
        certify_run(tiny_run, **{**CERT, **change})


def test_certify_run_rejects_something_that_is_not_a_run():
    with pytest.raises(ValueError, match="run"):
        certify_run(object(), **CERT)


def test_summary_table_holds_acr_abstention_and_accuracy_at_radii():
    df = pd.DataFrame({"idx": range(4), "label": [0, 1, 2, 3], "predict": [0, 1, -1, 0],
                       "radius": [0.3, 0.8, 0.0, 0.5], "correct": [1, 1, 0, 0]})
    table = smoothing.summary_table({"a": df}, [0.0, 0.5])
    assert list(table.columns) == ["acr", "abstain", "r0.00", "r0.50"]
    row = table.loc["a"]
    assert row["acr"] == pytest.approx((0.3 + 0.8) / 4)
    assert row["abstain"] == pytest.approx(0.25)
    assert (row["r0.00"], row["r0.50"]) == (pytest.approx(0.5), pytest.approx(0.25))
    with pytest.raises(ValueError, match="radii"):
        smoothing.summary_table({"a": df}, [-1.0])


def test_radius_cap_is_the_radius_when_every_sample_agrees():
    for sigma, n, alpha in ((0.25, 100_000, 0.001), (1.0, 2000, 0.001)):
        assert smoothing.radius_cap(sigma, n, alpha) == pytest.approx(sigma * stats.norm.ppf(alpha ** (1 / n)))
    assert smoothing.radius_cap(1.0, 100_000, 0.001) == pytest.approx(3.8115, abs=1e-4)   # reference notes §1.2
    with pytest.raises(ValueError, match="n"):
        smoothing.radius_cap(1.0, 0, 0.001)


def test_equal_confidence_ratio_finds_the_first_crossing_by_linear_interpolation():
    ratios = np.array([0.0, 0.5, 1.0])
    conf = np.zeros((3, 3, 3))
    conf[0, :, 0] = [0.9, 0.6, 0.2]; conf[0, :, 1] = [0.1, 0.4, 0.8]     # margin 0.8, 0.2, -0.6 -> 0.5 + 0.5*0.25
    conf[1, :, 0] = [0.9, 0.8, 0.7]; conf[1, :, 1] = [0.1, 0.2, 0.3]     # never flips
    conf[2, :, 0] = [0.2, 0.2, 0.2]; conf[2, :, 1] = [0.8, 0.8, 0.8]     # wrong at lambda = 0
    out = smoothing.equal_confidence_ratio(conf, [0, 0, 0], ratios)
    assert out[0] == pytest.approx(0.625)
    assert np.isnan(out[1]) and np.isnan(out[2])
    with pytest.raises(ValueError, match="confidence"):
        smoothing.equal_confidence_ratio(conf[:, :2], [0, 0, 0], ratios)


def test_interpolation_confidence_is_the_smoothed_softmax_along_the_segment():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 4))
    x, x_adv = torch.rand(5, 3, 2, 2), torch.rand(5, 3, 2, 2)
    ratios = [0.0, 0.5, 1.0]
    conf = smoothing.interpolation_confidence(model, x, x_adv, sigma=0.3, num_noise=6, ratios=ratios,
                                              generator=torch.Generator().manual_seed(1))
    assert conf.shape == (5, 3, 4) and np.allclose(conf.sum(-1), 1, atol=1e-5)
    noise = attacks.draw_noise(x, sigma=0.3, num_noise=6, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for k, lam in enumerate(ratios):
            expect = attacks.smoothed_softmax(model, (1 - lam) * x + lam * x_adv, noise)
            assert np.allclose(conf[:, k], expect.numpy(), atol=1e-6)
    assert model.training
    with pytest.raises(ValueError, match="ratios"):
        smoothing.interpolation_confidence(model, x, x_adv, sigma=0.3, num_noise=2, ratios=[0.0, 1.5])


def test_adversarial_interpolation_returns_paths_from_x_to_its_smoothmix_adversary():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3)).eval()
    x, y = torch.rand(6, 3, 2, 2), torch.tensor([0, 1, 2, 0, 1, 2])
    ratios = np.linspace(0, 1, 5)
    ascent = smoothing.SmoothMixAscent(sigma=0.2, step_size=1.0, steps=3, num_noise=4)
    out = smoothing.adversarial_interpolation(model, x, y, ascent=ascent, ratios=ratios,
                                              generator=torch.Generator().manual_seed(0))
    assert out["true"].shape == out["other"].shape == (6, 5)
    assert out["other_class"].shape == (6,) and (out["other_class"] != y.numpy()).all()
    finite = out["ratio"][np.isfinite(out["ratio"])]
    assert ((finite >= 0) & (finite <= 1)).all()
    # where the prediction flips, the true class is no longer on top at the end of the path
    flipped = np.isfinite(out["ratio"])
    assert (out["true"][flipped, -1] <= out["other"][flipped, -1] + 1e-6).all()
    # the ascent lowers the true-class confidence along the path on average
    assert out["true"][:, -1].mean() < out["true"][:, 0].mean()
