"""Tests of the randomized-smoothing certifier (rs_lib.smoothing): soundness on a classifier whose
smoothed radius is known in closed form, the reference's statistics and edge cases, the packed
many-input path, resumable dataset certification and the analysis helpers."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats
from statsmodels.stats.proportion import proportion_confint
from torch import nn

from helpers import certify_dataset, linear_classifier
from rs_lib import smoothing
from rs_lib.smoothing import (
    ABSTAIN, Certificate, Smooth, abstention_rate, acr, certified_accuracy,
    example_generator, high_prob_accuracy, l2_to_linf, lower_confidence_bound, merge_certify_tsv,
    prediction_from_counts, read_certify_tsv, upper_envelope,
)

# ---------------------------------------------------------------------------------------------
# Small base classifiers
# ---------------------------------------------------------------------------------------------


class Constant(nn.Module):
    """Always predicts ``label``."""

    def __init__(self, num_classes: int, label: int) -> None:
        super().__init__()
        self.num_classes, self.label = num_classes, label

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(len(x), self.num_classes, device=x.device)
        logits[:, self.label] = 1.0
        return logits


class Alternating(nn.Module):
    """Predicts class 0 and 1 on alternate rows of each batch: exact ties for even batches."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parity = torch.arange(len(x), device=x.device) % 2
        return nn.functional.one_hot(parity, 3).float()


class Recorder(nn.Module):
    """Wraps a model; counts forward calls and samples, keeps the inputs, can fail on cue."""

    def __init__(self, model: nn.Module, *, keep: bool = False,
                 fail_at_call: int | None = None) -> None:
        super().__init__()
        self.model, self.keep, self.fail_at_call = model, keep, fail_at_call
        self.calls, self.samples, self.inputs = 0, 0, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.fail_at_call is not None and self.calls >= self.fail_at_call:
            raise RuntimeError("simulated kill")
        self.samples += len(x)
        if self.keep:
            self.inputs.append(x.clone())
        return self.model(x)


def small_cnn(num_classes: int = 4) -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, num_classes))


class PointEstimateSmooth(Smooth):
    """An unsound certifier: the Clopper-Pearson bound replaced by the point estimate nA / n."""

    def lower_confidence_bound(self, count: int, n: int, alpha: float) -> float:
        return count / n


# ---------------------------------------------------------------------------------------------
# Soundness against the closed form
# ---------------------------------------------------------------------------------------------

SOUND_ALPHA = 0.05


def soundness_failures(smooth_class: type[Smooth], *, num_inputs: int = 1200, n0: int = 64,
                       n: int = 200, sigma: float = 0.25) -> tuple[int, int, int]:
    """Certify inputs near the hyperplane w.x + b = 0 of a linear f, where the smoothed classifier
    is g(x) = [w.x + b > 0] with true radius |w.x + b| / ||w|| (P(f(x + d) = 1) =
    Phi((w.x + b) / (sigma ||w||))).  Returns (failures, certified, inputs); a failure is a
    certificate for the wrong class or with a radius above the true one."""
    gen = torch.Generator().manual_seed(0)
    d = 16
    w = torch.randn(d, generator=gen, dtype=torch.float64)
    unit = w / w.norm()
    x0 = torch.full((d,), 0.5, dtype=torch.float64)
    b = -float(w @ x0)
    # signed distances giving true p_A from 0.5 to 0.98 on either side of the boundary
    t = (torch.rand(num_inputs, generator=gen, dtype=torch.float64) * 2 - 1) * sigma * 2.05
    jitter = 0.05 * torch.randn(num_inputs, d, generator=gen, dtype=torch.float64)
    jitter -= (jitter @ unit)[:, None] * unit                     # move along the boundary
    xs = (x0 + t[:, None] * unit + jitter).clamp(0, 1)
    s = xs @ w + b
    true_class = (s > 0).long().numpy()
    true_radius = (s.abs() / w.norm()).numpy()
    smooth = smooth_class(linear_classifier(w.float(), b), 2, sigma)
    generators = [example_generator(7, k) for k in range(num_inputs)]
    certificates = smooth.certify_batch(xs.float().reshape(num_inputs, 1, 4, 4), n0, n, SOUND_ALPHA,
                                        4096, generators=generators)
    failures = certified = 0
    for cert, cls, radius in zip(certificates, true_class, true_radius):
        if cert.prediction == ABSTAIN:
            continue
        certified += 1
        failures += cert.prediction != cls or cert.radius > radius
    return failures, certified, num_inputs


def failure_rate_pvalue(failures: int, trials: int) -> float:
    """p-value of 'failure rate <= alpha' given the observed failures (one-sided binomial)."""
    return stats.binomtest(failures, trials, SOUND_ALPHA, alternative="greater").pvalue


def test_certify_failure_rate_is_at_most_alpha_on_a_linear_classifier():
    failures, certified, inputs = soundness_failures(Smooth)
    assert failure_rate_pvalue(failures, inputs) > 1e-3, (failures, inputs)
    assert certified > inputs / 2          # not vacuous: most inputs are certified


def test_same_harness_rejects_a_point_estimate_bound():
    failures, certified, inputs = soundness_failures(PointEstimateSmooth)
    assert failure_rate_pvalue(failures, inputs) < 1e-6, (failures, inputs)
    assert failures > 5 * SOUND_ALPHA * inputs


# ---------------------------------------------------------------------------------------------
# Statistics: reference equivalence and edge cases
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [1, 10, 100, 1000, 100_000])
@pytest.mark.parametrize("alpha", [0.001, 0.05, 0.3])
def test_bound_equals_statsmodels_clopper_pearson(n, alpha):
    for count in sorted({0, 1, n // 3, n // 2, n - 1, n}):
        if count < 0:
            continue
        expected = proportion_confint(count, n, alpha=2 * alpha, method="beta")[0]
        expected = 0.0 if np.isnan(expected) else expected
        assert lower_confidence_bound(count, n, alpha) == pytest.approx(expected, rel=1e-10, abs=1e-15)


def test_all_samples_one_class_radius_is_capped_by_n_and_alpha():
    n, alpha, sigma = 1000, 0.001, 0.5
    smooth = Smooth(Constant(5, 3), 5, sigma)
    cert = smooth.certify_detailed(torch.rand(1, 6, 6), 10, n, alpha, 128)
    cap = alpha ** (1 / n)
    assert cert.prediction == 3 and cert.count == n and cert.n == n
    assert cert.p_lower == pytest.approx(cap, rel=1e-12) and cert.p_lower < 1
    assert cert.radius == pytest.approx(sigma * stats.norm.ppf(cap), rel=1e-12)
    assert smooth.predict(torch.rand(1, 6, 6), 50, alpha, 16) == 3


def test_certify_returns_the_reference_pair():
    result = Smooth(Constant(3, 1), 3, 0.25).certify(torch.rand(1, 4, 4), 10, 100, 0.001, 32)
    prediction, radius = result
    assert type(result) is tuple and type(prediction) is int and type(radius) is float
    assert Smooth.ABSTAIN == -1 == ABSTAIN


def test_abstains_when_two_classes_are_equally_likely():
    w = torch.ones(16)
    smooth = Smooth(linear_classifier(w, -8.0), 2, 0.5)     # x on the boundary: p_A = 1/2
    x = torch.full((1, 4, 4), 0.5)
    gen = torch.Generator().manual_seed(3)
    assert smooth.certify(x, 100, 2000, 0.001, 500, generator=gen) == (ABSTAIN, 0.0)
    assert smooth.predict(x, 2000, 0.001, 500, generator=gen) == ABSTAIN


def test_predict_ties_abstain_and_runner_up_ties_do_not_matter():
    assert prediction_from_counts([5, 5, 0], 0.05) == ABSTAIN
    assert prediction_from_counts([0, 100, 100], 0.4) == ABSTAIN
    assert prediction_from_counts([40, 3, 3], 0.05) == 0
    assert prediction_from_counts([3, 3, 40, 3], 0.05) == 2
    assert prediction_from_counts([100, 0, 0], 0.001) == 0
    # exact ties from the model: rows alternate between classes 0 and 1
    smooth = Smooth(Alternating(), 3, 0.25)
    assert smooth.predict(torch.rand(1, 4, 4), 1000, 0.5, 100) == ABSTAIN
    cert = smooth.certify_detailed(torch.rand(1, 4, 4), 10, 1000, 0.5, 100)
    assert cert.prediction == ABSTAIN and cert.count == 500


def test_predict_matches_the_binomial_test_on_the_top_two_counts():
    counts = [3, 60, 40, 7]
    p_value = stats.binomtest(60, 100, 0.5).pvalue
    assert prediction_from_counts(counts, p_value * 1.01) == 1
    assert prediction_from_counts(counts, p_value * 0.99) == ABSTAIN


def test_every_sample_counted_once_when_batch_size_does_not_divide_n():
    model = Recorder(Constant(4, 2))
    cert = Smooth(model, 4, 0.25).certify_detailed(torch.rand(1, 5, 5), 37, 250, 0.01, 64)
    assert cert.count == 250 and cert.n == 250
    assert model.samples == 37 + 250 and model.calls == math.ceil(287 / 64)
    # a batch far larger than the work allocates only what the work needs
    assert Smooth(Constant(4, 2), 4, 0.25).certify(torch.rand(1, 5, 5), 5, 10, 0.1, 10**12)[0] == 2


def test_results_do_not_depend_on_batch_size_under_a_fixed_generator():
    smooth = Smooth(small_cnn(), 4, 0.5)
    x = torch.rand(1, 8, 8)
    results = {bs: smooth.certify_detailed(x, 50, 300, 0.01, bs,
                                           generator=torch.Generator().manual_seed(5))
               for bs in (7, 64, 1000)}
    assert len(set(results.values())) == 1


def test_n0_larger_than_n_is_allowed():
    model = Recorder(Constant(3, 0))
    cert = Smooth(model, 3, 0.25).certify_detailed(torch.rand(1, 4, 4), 500, 50, 0.01, 64)
    assert cert.prediction == 0 and cert.n == 50 and cert.count == 50
    assert model.samples == 550


def test_noise_is_gaussian_in_pixel_space_unclamped_and_never_reused():
    model = Recorder(Constant(2, 0), keep=True)
    x = torch.rand(3, 8, 8) * 0.1
    sigma = 0.5
    Smooth(model, 2, sigma).certify(x, 100, 900, 0.01, 250)
    noisy = torch.cat(model.inputs)
    noise = noisy - x
    assert len(noisy) == 1000 and len(torch.unique(noisy.flatten(1), dim=0)) == 1000
    assert abs(noise.mean().item()) < 0.01
    assert noise.std().item() == pytest.approx(sigma, rel=0.01)
    assert noisy.min() < 0 and noisy.max() > 1                  # no clamping to [0, 1]


def test_base_classifier_is_put_in_eval_mode():
    class TrainModeFails(nn.Module):
        def forward(self, x):
            assert not self.training, "certified in train mode"
            return torch.zeros(len(x), 2)

    model = TrainModeFails().train()
    Smooth(model, 2, 0.25).predict(torch.rand(1, 4, 4), 10, 0.1, 8)
    assert not model.training


def test_global_rng_path_is_reproducible_with_manual_seed():
    smooth = Smooth(small_cnn(), 4, 0.5)
    x = torch.rand(1, 8, 8)
    torch.manual_seed(11)
    first = smooth.certify_detailed(x, 20, 200, 0.01, 64)
    torch.manual_seed(11)
    assert smooth.certify_detailed(x, 20, 200, 0.01, 64) == first


@pytest.mark.parametrize("kwargs, name", [
    ({"alpha": 0.0}, "alpha"), ({"alpha": 1.0}, "alpha"), ({"alpha": -0.1}, "alpha"),
    ({"n": 0}, "n"), ({"n": 10.5}, "n"), ({"n": True}, "n"), ({"n0": 0}, "n0"),
    ({"batch_size": 0}, "batch_size"), ({"batch_size": 2.0}, "batch_size"),
    ({"x": torch.rand(1, 1, 4, 4)}, "x"), ({"x": torch.rand(4, 4)}, "x"),
    ({"x": torch.rand(1, 4, 4) + 1.0}, "x"), ({"x": torch.ones(1, 4, 4, dtype=torch.long)}, "x"),
])
def test_invalid_certify_arguments_raise_named_value_errors(kwargs, name):
    args = {"x": torch.rand(1, 4, 4), "n0": 10, "n": 100, "alpha": 0.01, "batch_size": 32, **kwargs}
    smooth = Smooth(Constant(2, 0), 2, 0.25)
    with pytest.raises(ValueError, match=name):
        smooth.certify(args["x"], args["n0"], args["n"], args["alpha"], args["batch_size"])


@pytest.mark.parametrize("sigma", [0.0, -0.5, float("nan"), "0.5"])
def test_invalid_sigma_raises(sigma):
    with pytest.raises(ValueError, match="sigma"):
        Smooth(Constant(2, 0), 2, sigma)


def test_invalid_predict_arguments_and_model_outputs_raise():
    smooth = Smooth(Constant(2, 0), 2, 0.25)
    with pytest.raises(ValueError, match="alpha"):
        smooth.predict(torch.rand(1, 4, 4), 10, 1.5, 8)
    with pytest.raises(ValueError, match="num_classes"):
        Smooth(Constant(2, 0), 1, 0.25)
    with pytest.raises(ValueError, match="num_classes=3"):
        Smooth(Constant(2, 0), 3, 0.25).predict(torch.rand(1, 4, 4), 10, 0.1, 8)
    with pytest.raises(ValueError, match="generators"):
        smooth.certify_batch(torch.rand(2, 1, 4, 4), 5, 10, 0.1, 8, generators=[torch.Generator()])


# ---------------------------------------------------------------------------------------------
# Packed many-input path and speed options
# ---------------------------------------------------------------------------------------------

def test_packed_inputs_give_the_same_certificates_as_one_at_a_time():
    smooth = Smooth(small_cnn(), 4, 0.5)
    xs = torch.rand(7, 1, 8, 8)
    packed = smooth.certify_batch(xs, 30, 90, 0.01, 256,
                                  generators=[example_generator(0, k) for k in range(7)])
    single = [smooth.certify_detailed(xs[k], 30, 90, 0.01, 50, generator=example_generator(0, k))
              for k in range(7)]
    assert packed == single
    assert len({c.count for c in packed}) > 1         # inputs really differ: attribution is tested
    predicted = smooth.predict_batch(xs, 200, 0.01, 512,
                                     generators=[example_generator(1, k) for k in range(7)])
    assert predicted == [smooth.predict(xs[k], 200, 0.01, 64, generator=example_generator(1, k))
                         for k in range(7)]


def test_channels_last_gives_identical_certificates():
    x = torch.rand(3, 1, 8, 8)
    gens = lambda: [example_generator(2, k) for k in range(3)]  # noqa: E731
    plain = Smooth(small_cnn(), 4, 0.25).certify_batch(x, 20, 200, 0.01, 128, generators=gens())
    fast = Smooth(small_cnn(), 4, 0.25, channels_last=True).certify_batch(x, 20, 200, 0.01, 128,
                                                                          generators=gens())
    assert plain == fast


def test_noise_drawn_in_many_blocks_is_independent_of_batch_size_and_never_repeats():
    # 64x64 inputs: a CPU noise block holds 16 samples, so 100 samples take 7 blocks through the
    # reused scratch buffer; packing them into batches of 5, 16 or 100 must not change anything.
    model = Recorder(nn.Sequential(nn.Flatten(), nn.Linear(64 * 64, 3)), keep=True)
    x = torch.rand(1, 64, 64)
    assert smoothing.noise_block(x) == 16
    certs, noisy = set(), {}
    for bs in (5, 16, 100):
        model.inputs.clear()
        certs.add(Smooth(model, 3, 0.5).certify_detailed(x, 10, 100, 0.01, bs,
                                                         generator=torch.Generator().manual_seed(3)))
        noisy[bs] = torch.cat(model.inputs)
    assert len(certs) == 1
    assert torch.equal(noisy[5], noisy[16]) and torch.equal(noisy[5], noisy[100])
    assert len(torch.unique(noisy[5].flatten(1), dim=0)) == 110


def test_compile_classifies_full_batches_compiled_and_a_partial_batch_eagerly(monkeypatch):
    compiled = []

    def fake_compile(module, **kwargs):
        assert kwargs == {"dynamic": False}
        wrapper = Recorder(module)
        compiled.append(wrapper)
        return wrapper

    monkeypatch.setattr(torch, "compile", fake_compile)
    eager = Recorder(small_cnn())
    smooth = Smooth(eager, 4, 0.25, compile=True)
    smooth.certify(torch.rand(1, 8, 8), 20, 230, 0.01, 100)       # 250 samples: 2 full batches + 50
    assert len(compiled) == 1 and compiled[0].samples == 200 and eager.samples == 250
    assert eager.calls == 3                                        # the wrapper forwards to it
    with pytest.raises(ValueError, match="compile"):
        Smooth(small_cnn(), 4, 0.25, compile="yes")


def test_compiled_classifier_gives_identical_certificates():
    x = torch.rand(2, 1, 8, 8)
    gens = lambda: [example_generator(4, k) for k in range(2)]  # noqa: E731
    plain = Smooth(small_cnn(), 4, 0.25).certify_batch(x, 20, 300, 0.01, 128, generators=gens())
    fast = Smooth(small_cnn(), 4, 0.25, compile=True).certify_batch(x, 20, 300, 0.01, 128, generators=gens())
    assert plain == fast


def test_bfloat16_autocast_is_opt_in_and_warns():
    with pytest.warns(UserWarning, match="reduced-precision"):
        smooth = Smooth(small_cnn(), 4, 0.25, autocast_dtype=torch.bfloat16)
    cert = smooth.certify_detailed(torch.rand(1, 8, 8), 10, 100, 0.01, 64)
    assert isinstance(cert, Certificate) and cert.n == 100
    with pytest.raises(ValueError, match="autocast_dtype"):
        Smooth(small_cnn(), 4, 0.25, autocast_dtype=torch.float64)


# ---------------------------------------------------------------------------------------------
# Dataset certification: TSV, resume, shards
# ---------------------------------------------------------------------------------------------

N0, N, ALPHA = 10, 40, 0.01


@pytest.fixture
def data():
    gen = torch.Generator().manual_seed(4)
    images = torch.rand(10, 1, 8, 8, generator=gen)
    labels = torch.randint(0, 4, (10,), generator=gen)
    return images, labels


def without_time(df: pd.DataFrame) -> pd.DataFrame:
    return df.drop(columns="time").reset_index(drop=True)


def run(path, data, model=None, **kwargs):
    model = model if model is not None else Recorder(small_cnn())
    smooth = Smooth(model, 4, 0.5)
    options = {"n0": N0, "n": N, "alpha": ALPHA, "batch_size": 120, "out_path": path,
               "progress": False, **kwargs}
    return certify_dataset(smooth, *data, **options), model


def test_certify_dataset_rows_equal_certify_with_the_example_generator(tmp_path, data):
    images, labels = data
    df, _ = run(tmp_path / "c.tsv", data, skip=3)
    header = (tmp_path / "c.tsv").read_text().splitlines()[0].split("\t")
    assert header == ["idx", "label", "predict", "radius", "correct", "time", "p_lower", "count", "n"]
    assert list(df["idx"]) == [0, 3, 6, 9]
    smooth = Smooth(small_cnn(), 4, 0.5)
    for row in df.itertuples():
        cert = smooth.certify_detailed(images[row.idx], N0, N, ALPHA, 64,
                                       generator=example_generator(0, row.idx))
        assert (row.predict, row.radius, row.p_lower, row.count, row.n) == tuple(cert)
        assert row.label == labels[row.idx] and row.correct == int(cert.prediction == row.label)
    assert (df["time"] >= 0).all()


def test_resume_after_kill_skips_finished_rows_and_matches_uninterrupted_run(tmp_path, data):
    full, _ = run(tmp_path / "full.tsv", data)
    path = tmp_path / "resumed.tsv"
    with pytest.raises(RuntimeError, match="simulated kill"):
        run(path, data, model=Recorder(small_cnn(), fail_at_call=4))
    written = len(read_certify_tsv(path))
    assert 0 < written < 10
    with path.open("a") as handle:                      # a kill in the middle of a write
        handle.write("9\t2\t1\t0.12")
    resumed, model = run(path, data, batch_size=33)
    assert model.samples == (10 - written) * (N0 + N)   # finished indices are not recomputed
    pd.testing.assert_frame_equal(without_time(resumed), without_time(full), check_exact=True)


def test_certifying_a_range_then_the_full_set_recomputes_nothing(tmp_path, data):
    full, _ = run(tmp_path / "full.tsv", data)
    path = tmp_path / "part.tsv"
    run(path, data, stop=4)
    resumed, model = run(path, data)
    assert model.samples == 6 * (N0 + N)
    pd.testing.assert_frame_equal(without_time(resumed), without_time(full), check_exact=True)


def test_resume_with_other_settings_is_refused(tmp_path, data):
    path = tmp_path / "c.tsv"
    run(path, data, stop=2)
    with pytest.raises(ValueError, match="other settings"):
        run(path, data, n=N + 1)
    with pytest.raises(ValueError, match="other settings"):
        run(path, data, seed=1)
    (tmp_path / "c.tsv.meta.json").unlink()
    with pytest.raises(ValueError, match="settings file"):
        run(path, data)


def test_shards_read_together_equal_one_run(tmp_path, data):
    full, _ = run(tmp_path / "full.tsv", data)
    run(tmp_path / "a.tsv", data, start=0, stop=5)
    run(tmp_path / "b.tsv", data, start=5)
    together = read_certify_tsv([tmp_path / "b.tsv", tmp_path / "a.tsv"])
    pd.testing.assert_frame_equal(without_time(together), without_time(full), check_exact=True)
    merged = merge_certify_tsv([tmp_path / "a.tsv", tmp_path / "b.tsv"], tmp_path / "m.tsv")
    pd.testing.assert_frame_equal(without_time(read_certify_tsv(tmp_path / "m.tsv")),
                                  without_time(merged), check_exact=True)
    with pytest.raises(ValueError, match="disjoint"):
        read_certify_tsv([tmp_path / "full.tsv", tmp_path / "a.tsv"])


def test_certify_dataset_accepts_pairs_and_explicit_indices(tmp_path, data):
    images, labels = data
    pairs = [(images[k], int(labels[k])) for k in range(10)]
    df = certify_dataset(Smooth(small_cnn(), 4, 0.5), pairs, n0=N0, n=N, alpha=ALPHA,
                         batch_size=50, out_path=tmp_path / "p.tsv", indices=[8, 2], progress=False)
    assert list(df["idx"]) == [2, 8]
    reference, _ = run(tmp_path / "r.tsv", data, indices=[2, 8])
    pd.testing.assert_frame_equal(without_time(df), without_time(reference), check_exact=True)
    with pytest.raises(ValueError, match="indices"):
        run(tmp_path / "x.tsv", data, indices=[1, 1])
    with pytest.raises(ValueError, match="not both"):
        run(tmp_path / "y.tsv", data, indices=[1], skip=2)


def test_read_certify_tsv_accepts_reference_files(tmp_path):
    new = tmp_path / "new.tsv"
    new.write_text("idx\tlabel\tpredict\tradius\tcorrect\ttime\n"
                   "0\t3\t3\t0.841\t1\t0:02:31.238689\n"
                   "20\t1\t-1\t0.0\t0\t0:00:15.5\n")
    old = tmp_path / "old.tsv"
    old.write_text("idx\tlabel\tpredict\tradius\tcorrect\ttime\n"
                   "0\t3\t3\t0.841\t1\t15.4\n"
                   "20\t1\t-1\t0.0\t0\t16\n"
                   "40\t2\t")                                   # torn by a kill
    df_new, df_old = read_certify_tsv(new), read_certify_tsv(old)
    assert df_new["time"].tolist() == pytest.approx([151.238689, 15.5])
    assert df_old["time"].tolist() == pytest.approx([15.4, 16.0]) and len(df_old) == 2
    assert df_new["radius"].tolist() == [0.841, 0.0]


# ---------------------------------------------------------------------------------------------
# Analysis on a hand-built frame
# ---------------------------------------------------------------------------------------------

@pytest.fixture
def frame():
    return pd.DataFrame({
        "idx": [0, 1, 2, 3, 4],
        "label": [1, 1, 1, 2, 0],
        "predict": [1, 1, 3, -1, 0],
        "radius": [0.5, 1.2, 0.8, 0.0, 0.0],
        "correct": [1, 1, 0, 0, 1],
    })


def test_certified_accuracy_counts_correct_rows_with_radius_at_least_r(frame):
    accuracy = certified_accuracy(frame, [0.0, 0.5, 0.51, 1.2, 1.5])
    assert accuracy == pytest.approx([0.6, 0.4, 0.2, 0.2, 0.0])
    assert certified_accuracy(frame, 0.5) == pytest.approx(0.4)


def test_acr_and_abstention_rate(frame):
    assert acr(frame) == pytest.approx((0.5 + 1.2) / 5)
    assert abstention_rate(frame) == pytest.approx(0.2)


def test_upper_envelope_takes_the_best_model_per_radius(frame):
    other = frame.assign(radius=[2.0, 0.1, 0.8, 0.0, 0.0], correct=[1, 0, 0, 0, 0])
    radii = [0.0, 0.5, 1.0, 1.5, 2.0]
    envelope = upper_envelope({"a": frame, "b": other}, radii)
    assert envelope == pytest.approx([0.6, 0.4, 0.2, 0.2, 0.2])
    assert upper_envelope([certified_accuracy(frame, radii), [0, 0, 1, 0, 0]], radii) == \
        pytest.approx([0.6, 0.4, 1.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="one value per radius"):
        upper_envelope([[0.1, 0.2]], radii)


def test_l2_to_linf_divides_by_sqrt_dim():
    assert l2_to_linf(0.435, 3 * 32 * 32) == pytest.approx(2 / 255, rel=2e-3)   # SmoothAdv Table 3
    assert l2_to_linf(np.array([0.0, 3.0]), 9) == pytest.approx([0.0, 1.0])
    with pytest.raises(ValueError, match="dim"):
        l2_to_linf(1.0, 0)


def test_high_prob_accuracy_is_cohens_bound(frame):
    alpha = rho = 0.001
    log_term = math.log(1 / rho)
    expected = 0.4 - alpha - math.sqrt(alpha * (1 - alpha) * log_term / 5) - log_term / 15
    assert high_prob_accuracy(frame, [0.5], alpha=alpha, rho=rho) == pytest.approx([expected])


def test_analysis_rejects_frames_without_certify_columns():
    with pytest.raises(ValueError, match="radius"):
        certified_accuracy(pd.DataFrame({"correct": [1]}), [0.0])
    with pytest.raises(ValueError, match="predict"):
        abstention_rate(pd.DataFrame({"x": [1]}))


def test_module_exports_reference_constants():
    assert smoothing.TSV_COLUMNS == ("idx", "label", "predict", "radius", "correct", "time")
