"""rs_lib.plan: every experiment's runs and results as jobs keyed by the store, equal to what its
notebook looks up (smoke: tests/test_notebooks.py executes each notebook and compares; cpu and
paper: here, the notebook's own code with the store's heavy calls replaced by recorders), run_job / job_done,
and certification sharded by index range then merged, equal to one process row for row."""

from __future__ import annotations

import dataclasses
import json
import pickle
import types
from pathlib import Path

import matplotlib
import nbformat
import pytest

from rs_lib import book, data, plan, profiles, smoothing, store, train
from rs_lib.presets import smoothing as sp

matplotlib.use("Agg")

TERMINAL_KINDS = ("train", "evaluate", "certify_merge")


def _store_key(cfg, store_name):
    """The run's folder name, as train.run_training finds it; where the training data are missing
    (the paper's datasets on this machine) the plan's placeholder, since no key exists."""
    try:
        return train.run_dir_for(cfg, experiment=store_name).path.name
    except data.DatasetNotFoundError:
        return plan.NO_DATA + store.config_hash(cfg.to_dict())


# ---------------------------------------------------------------------------- the jobs themselves

@pytest.mark.parametrize("profile", profiles.PROFILES)
@pytest.mark.parametrize("experiment", plan.experiments())
def test_every_plan_is_keyed_by_the_store_ordered_by_needs_and_serialisable(experiment, profile):
    jobs = plan.plan(experiment, profile)
    assert jobs and all(j.kind in plan.KINDS and j.experiment == experiment for j in jobs)
    keys = [j.key for j in jobs]
    assert len(set(keys)) == len(keys)
    seen: set[str] = set()
    for job in jobs:
        assert set(job.needs) <= seen, f"{job.label} comes before what it needs"
        seen.add(job.key)
        if job.kind == "train":
            cfg = train.TrainConfig(**job.spec["config"])
            assert job.key == _store_key(cfg, job.store)
            assert job.cost["iterations"] > 0 and job.cost["model"] == cfg.model
        else:
            assert job.needs and job.key.startswith(job.run_key + "/") and job.run_key in seen
    assert pickle.loads(pickle.dumps(jobs)) == jobs
    json.dumps([j.as_dict() for j in jobs])


def test_paper_certification_at_n_100000_is_sharded_by_index_range():
    jobs = plan.plan("rs_certified_curves", "paper")
    merges = [j for j in jobs if j.kind == "certify_merge"]
    shards = [j for j in jobs if j.kind == "certify_shard"]
    s = profiles.resolve("rs_certified_curves", "paper")
    assert len(merges) == len(s.train_sigmas) and s.cert_n == 100_000
    for merge in merges:
        mine = [j for j in shards if j.key in merge.needs]
        assert len(mine) == merge.spec["shards"] > 1
        assert sum(j.cost["images"] for j in mine) == s.cert_points
        assert all(j.cost["samples"] <= plan.CERTIFY_SHARD_SAMPLES for j in mine)
        assert merge.key.endswith(".tsv") and ".shard" not in merge.key


def test_smoke_and_cpu_certify_in_one_job():
    for profile in ("smoke", "cpu"):
        assert not [j for e in plan.experiments() for j in plan.plan(e, profile) if j.kind.startswith("certify_")]


def test_shared_runs_are_one_job_across_a_chapter():
    jobs = list(plan.iter_plans(plan.experiments("backward_smoothing"), "cpu"))
    keys = [(j.store, j.key) for j in jobs]
    assert len(set(keys)) == len(keys)
    per_experiment = sum(len(plan.plan(e, "cpu")) for e in plan.experiments("backward_smoothing"))
    assert len(jobs) < per_experiment      # e.g. Backward Smoothing at eps 0.3 serves five notebooks
    both = list(plan.iter_plans(("bs_stability", "rs_comparison"), "smoke", seeds=[0, 1, 2]))
    assert len([j for j in both if j.experiment == "bs_stability" and j.kind == "train"]) == 9  # 3 seeds x (Fast AT, Fast TRADES, BS)
    with pytest.raises(ValueError, match=r"'seedz' is not a parameter of any.*seeds"):
        list(plan.iter_plans(("bs_stability", "rs_comparison"), "smoke", seedz=[0]))


def test_overrides_change_the_plan_and_a_misspelled_one_names_the_knobs():
    base = plan.plan("bs_stability", "smoke")
    more = plan.plan("bs_stability", "smoke", seeds=[0, 1, 2])
    assert len([j for j in more if j.kind == "train"]) == len([j for j in base if j.kind == "train"]) * 3 // 2
    with pytest.raises(ValueError, match=r"'seedz'.*seeds"):
        plan.plan("bs_stability", "smoke", seedz=[0])
    with pytest.raises(ValueError, match="experiment"):
        plan.plan("bs_nope", "smoke")
    with pytest.raises(ValueError, match="chapter"):
        plan.experiments("nope")
    assert set(plan.experiments()) == set(book.NOTEBOOKS)


# ---------------------------------------------------------------------------- running jobs

def _run_all(jobs, root):
    for job in jobs:
        assert not plan.job_done(job, root=root)
        plan.run_job(job, device="cpu", root=root, progress=False)
        assert plan.job_done(job, root=root)


def test_run_job_fills_the_store_that_the_notebook_functions_read(tmp_path):
    root = tmp_path / "results"
    jobs = plan.plan("rs_certified_curves", "smoke")
    evaluate = next(j for j in jobs if j.kind == "evaluate")
    with pytest.raises(ValueError, match="train job first"):
        plan.run_job(evaluate, device="cpu", root=root, progress=False)
    _run_all(jobs, root)
    s = profiles.resolve("rs_certified_curves", "smoke")
    run = train.run_training(sp.model_config(s, s.models["Gaussian"], 0.5), experiment=sp.STORE, root=root)
    mtime = {p: p.stat().st_mtime_ns for p in run.dir.path.iterdir()}
    frame = smoothing.certify_run(run, sp.certification(s), device="cpu", progress=False)
    assert len(frame) == s.cert_points
    assert {p: p.stat().st_mtime_ns for p in run.dir.path.iterdir()} == mtime   # read back, nothing redone


def test_a_run_whose_data_are_missing_is_planned_under_a_placeholder_key_that_never_runs(monkeypatch):
    def missing(name, **kwargs):
        raise data.DatasetNotFoundError(f"{name} not found")

    monkeypatch.setattr(data, "fingerprint", missing)
    jobs = plan.plan("rs_certified_curves", "smoke")
    assert all(j.key.startswith(plan.NO_DATA) for j in jobs) and len({j.key for j in jobs}) == len(jobs)
    assert sum(j.cost["iterations"] for j in jobs) > 0
    assert not any(plan.job_done(j) for j in jobs)
    with pytest.raises(data.DatasetNotFoundError, match="not found"):
        plan.run_job(jobs[0], device="cpu")
    monkeypatch.undo()
    with pytest.raises(ValueError, match="plan again"):
        plan.run_job(jobs[0], device="cpu")


def test_a_job_of_a_changed_config_is_refused():
    job = plan.plan("noise_training", "smoke")[0]
    bad = plan.Job(job.kind, job.experiment, job.store, "0" * 12, job.needs, job.label, job.spec, job.cost)
    with pytest.raises(ValueError, match="hashes to"):
        plan.run_job(bad, device="cpu")


def test_sharded_certification_merged_equals_one_process_row_for_row(tmp_path, monkeypatch):
    s = profiles.resolve("rs_certified_curves", "smoke")
    cfg = sp.model_config(s, s.models["Gaussian"], 0.25)
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    run = train.run_training(cfg, experiment=sp.STORE, root=single, device="cpu", progress=False)
    c = sp.certification(s)
    cert = {"n_points": 7, "n0": c.settings.n0, "n": 60, "alpha": c.settings.alpha, "seed": c.seed}
    certification = dataclasses.replace(c, n_points=7, settings=dataclasses.replace(c.settings, n=60))
    whole = smoothing.certify_run(run, certification, device="cpu", progress=False)

    monkeypatch.setattr(plan, "CERTIFY_SHARD_SAMPLES", 2 * (cert["n0"] + cert["n"]))   # 2 images a shard
    p = plan._Plan("rs_certified_curves", "smoke", {}, sp.STORE)
    p.certify(cfg, "Gaussian 0.25", sigma=0.25, cert={**{k: cert[k] for k in ("n_points", "n0", "n", "alpha", "seed")},
              "batch_size": 16})                        # another batch size: same rows
    jobs = list(p.jobs.values())
    shards = [j for j in jobs if j.kind == "certify_shard"]
    assert len(shards) == 4 and [j.cost["images"] for j in shards] == [1, 2, 2, 2]
    merge = jobs[-1]
    assert merge.kind == "certify_merge"
    (sharded / sp.STORE).mkdir(parents=True)
    import shutil
    shutil.copytree(run.dir.path, sharded / sp.STORE / run.dir.path.name,
                    ignore=shutil.ignore_patterns("certify-*"))
    with pytest.raises(ValueError, match="shard"):
        plan.run_job(merge, device="cpu", root=sharded, progress=False)
    for job in reversed(shards):                        # any order
        plan.run_job(job, device="cpu", root=sharded, progress=False)
    assert not plan.job_done(merge, root=sharded)
    plan.run_job(merge, device="cpu", root=sharded, progress=False)
    assert plan.job_done(merge, root=sharded)

    name = merge.key.split("/", 1)[1]
    assert (run.dir.path / name).is_file()             # the same file name as the single process wrote
    merged_path = sharded / sp.STORE / merge.key
    cols = lambda path: [line.split("\t")[:5] + line.split("\t")[6:]   # noqa: E731 (time aside)
                         for line in Path(path).read_text().splitlines()]
    assert cols(merged_path) == cols(run.dir.path / name)
    rerun = train.Run(train.run_dir_for(cfg, experiment=sp.STORE, root=sharded), cfg)
    read = smoothing.certify_run(rerun, certification, device="cpu", progress=False)
    assert read.drop(columns="time").equals(whole.drop(columns="time"))

    # max_iterations (the paper-path check): one image per shard at a small n, merged, the real file untouched
    cut = {"max_iterations": 2} if plan._CUT_RUNS else {}     # where train keys a cut run apart
    if cut:
        plan.run_job(jobs[0], device="cpu", root=sharded, progress=False, **cut)
    small_dir = train.run_dir_for(cfg, experiment=sp.STORE, root=sharded, **cut).path
    before = set(small_dir.iterdir())
    for job in [*shards, merge]:
        plan.run_job(job, device="cpu", root=sharded, progress=False, max_iterations=2)
    small = [p for p in set(small_dir.iterdir()) - before if ".shard" not in p.name and p.suffix == ".tsv"]
    assert len(small) == 1 and len(smoothing.read_certify_tsv(small[0])) == len(shards)
    assert cols(merged_path) == cols(run.dir.path / name)


# ---------------------------------------------------------------------------- cpu: notebook == plan

class _Anything:
    """Stands for every result a recorded call would return: any attribute, item, call or
    arithmetic gives it back, it iterates as empty, is true, 1 as a number, '…' as text."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return self

    def __call__(self, *args, **kwargs):
        return self

    def __getitem__(self, key):
        return self

    def __iter__(self):
        return iter(())

    def __len__(self):
        return 0

    def __bool__(self):
        return True

    def __int__(self):
        return 1

    def __float__(self):
        return 1.0

    def __index__(self):
        return 1

    def __format__(self, spec):
        return "…"

    def __hash__(self):
        return id(self)

    def __contains__(self, item):
        return False

    def _same(self, *args):
        return self

    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = __truediv__ = __rtruediv__ = _same
    __floordiv__ = __mod__ = __pow__ = __neg__ = __abs__ = __round__ = _same
    __eq__ = __ne__ = __lt__ = __le__ = __gt__ = __ge__ = __and__ = __or__ = __invert__ = _same


ANY = _Anything()
_SIZES = {"train": 55_000, "val": 5_000, "test": 10_000}   # fashion-mnist (the cpu profiles' dataset)


class _Recorder:
    """The run store's entry points with the work left out: each lookup is recorded as (store, key)."""

    def __init__(self):
        self.keys: set[tuple[str, str]] = set()

    def run_training(self, cfg, *, experiment="adhoc", **kwargs):
        key = _store_key(cfg, experiment)
        self.keys.add((experiment, key))
        return _FakeRun(self, experiment, key, cfg)

    def certify_run(self, run, certification, *, device="auto", progress=True, compile=False):
        self.keys.add((run.store, f"{run.key}/{smoothing.certify_file_name(certification.params(run.config))}"))
        return ANY


class _FakeRun:
    def __init__(self, recorder, store, key, config):
        self.recorder, self.store, self.key, self.config = recorder, store, key, config
        self.dir = types.SimpleNamespace(path=Path(store) / key)
        self.summary = ANY

    def cached(self, name, params, compute):
        self.recorder.keys.add((self.store, f"{self.key}/{train.cached_name(name, params)}"))
        return ANY

    def epochs(self):
        return ANY

    def iterations(self):
        return ANY

    def load_model(self, *args, **kwargs):
        raise AssertionError("a recorded run has no weights: a notebook computed outside a cached function")


class _FakeData:
    def __init__(self, size):
        self.size = size
        self.labels = ANY

    def __len__(self):
        return self.size

    def subset(self, idx):
        return ANY

    def tensors(self, *args):
        return ANY, ANY


def _notebook_lookups(experiment: str, profile: str, monkeypatch, path: Path | None = None) -> tuple[set, list[str]]:
    """Execute the code cells of ``experiment``'s notebook in ``profile``, with training, the
    cached evaluations and certification recorded instead of run, and data of the right sizes.
    A cell that fails on a recorded (meaningless) result is left there and the next one runs: the
    presentation cells do; what matters is that no request for work is skipped (the assertion
    then fails, as a missing request would)."""
    from rs_lib import data, plots

    recorder = _Recorder()
    monkeypatch.setattr(train, "run_training", recorder.run_training)
    monkeypatch.setattr(smoothing, "certify_run", recorder.certify_run)
    monkeypatch.setattr(data, "load", lambda name, split, *, n=None, **kw: _FakeData(n or _SIZES[split]))
    for name in dir(plots):
        if not name.startswith("_") and callable(getattr(plots, name)) and name not in ("collapsed",):
            monkeypatch.setattr(plots, name, ANY)
    monkeypatch.setattr(plots, "collapsed", lambda *a, **k: False)
    nb = nbformat.read(str(path or book.NOTEBOOK_DIR / f"{experiment}.ipynb"), as_version=4)
    namespace: dict = {}
    failed = []
    for i, cell in enumerate(c for c in nb.cells if c.cell_type == "code"):
        source = cell.source
        if "parameters" in cell.metadata.get("tags", []):
            source += f"\nprofile = {profile!r}\ndevice = 'cpu'\n"
        try:
            exec(compile(source, f"{experiment}[{i}]", "exec"), namespace)
        except Exception as err:   # noqa: BLE001 (presentation of recorded results)
            failed.append(f"cell {i}: {type(err).__name__}: {err}")
        matplotlib.pyplot.close("all")
    return recorder.keys, failed


@pytest.mark.parametrize("profile", ["cpu", "paper"])
@pytest.mark.parametrize("experiment", plan.experiments())
def test_notebook_requests_exactly_its_plan_in_the_cpu_and_paper_profiles(experiment, profile, monkeypatch):
    from rs_lib.presets import backward_smoothing as bs

    monkeypatch.setattr(bs, "check_training_device", lambda *a, **k: None)   # paper's AMP runs need CUDA
    looked_up, failed = _notebook_lookups(experiment, profile, monkeypatch)
    jobs = plan.plan(experiment, profile)
    planned = {(j.store, j.key) for j in jobs if j.kind in TERMINAL_KINDS}
    labels = {(j.store, j.key): j.label for j in jobs}
    assert looked_up, failed
    assert not looked_up - planned, f"the notebook requests what its plan lacks: {sorted(looked_up - planned)[:5]}"
    assert not planned - looked_up, (f"the plan lists jobs the notebook never requests: "
                                     f"{sorted(labels[k] for k in planned - looked_up)[:5]}; failed cells: {failed}")


def _planned(experiment, profile, **overrides):
    return {(j.store, j.key) for j in plan.plan(experiment, profile, **overrides) if j.kind in TERMINAL_KINDS}


def test_the_cpu_check_fails_for_a_request_the_plan_lacks_and_for_one_it_never_makes(tmp_path, monkeypatch):
    source = book.NOTEBOOK_DIR / "noise_training.ipynb"
    nb = nbformat.read(str(source), as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(
        'extra = train.run_training(settings.train_config(method="gaussian", method_params={"sigma": 0.33}),\n'
        '                           experiment="noise_training", device=device)'))
    more = tmp_path / "more.ipynb"
    nbformat.write(nb, str(more))
    looked_up, _ = _notebook_lookups("noise_training", "cpu", monkeypatch, more)
    cfg = profiles.resolve("noise_training", "cpu").train_config(method="gaussian", method_params={"sigma": 0.33})
    assert looked_up - _planned("noise_training", "cpu") == {("noise_training", train.run_dir_for(
        cfg, experiment="noise_training").path.name)}

    nb = nbformat.read(str(source), as_version=4)
    nb.cells = [c for c in nb.cells if "noisy_accuracy" not in c.source]    # the evaluation cell left out
    fewer = tmp_path / "fewer.ipynb"
    nbformat.write(nb, str(fewer))
    looked_up, _ = _notebook_lookups("noise_training", "cpu", monkeypatch, fewer)
    missing = _planned("noise_training", "cpu") - looked_up
    assert len(missing) == len(profiles.resolve("noise_training", "cpu").train_sigmas) + 1   # + standard
    assert all(key.split("/")[1].startswith("noisy_accuracy-") for _, key in missing)


def test_run_job_with_max_iterations_runs_each_evaluation_small_and_leaves_the_real_key(tmp_path):
    root = tmp_path / "scratch"
    jobs = {j.key: j for e in plan.experiments() for j in plan.plan(e, "smoke")}
    first = {}                                   # one job of each evaluation function
    for job in jobs.values():
        if job.kind == "evaluate":
            first.setdefault(job.spec["function"], job)
    assert set(first) == set(plan.EVALUATIONS)
    cut = 2 if plan._CUT_RUNS else None     # train cut short too, where train keys such runs apart
    for function, job in first.items():
        plan.run_job(jobs[job.run_key], device="cpu", root=root, progress=False, max_iterations=cut)
        cfg = train.TrainConfig(**job.spec["config"])
        run_dir = train.run_dir_for(cfg, experiment=job.store, root=root,
                                    **({} if cut is None else {"max_iterations": cut})).path
        before = set(run_dir.iterdir())
        plan.run_job(job, device="cpu", root=root, progress=False, max_iterations=2)
        assert not plan.job_done(job, root=root), function     # a small result is never the real one
        assert set(run_dir.iterdir()) - before, function


def test_python_m_rs_lib_plan_prints_the_jobs_and_what_is_done(tmp_path, capsys):
    root = tmp_path / "results"
    jobs = plan.plan("rs_certified_curves", "smoke")
    plan.run_job(jobs[0], device="cpu", root=root, progress=False)
    assert plan.main(["rs_certified_curves", "--profile", "smoke", "--root", str(root)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(jobs) + 2 and lines[-1] == "4 jobs: 2 train, 2 evaluate"
    assert [line.split()[1] for line in lines[1:-1]] == ["yes", "no", "no", "no"]
    assert plan.main(["bs_nope"]) == 2 and "experiment" in capsys.readouterr().err
