"""The training loop: exact resume, cache hits, schedules, selection, and that it learns."""

import json

import pytest
import torch

from rs_lib import data, methods, train
from rs_lib.methods import warmup_factor as _warmup_factor
from rs_lib.train import Control, TrainConfig, lr_factor, run_training


def warmup_factor(cfg, epoch, progress):  # the training loop's call of the one warm-up rule
    return _warmup_factor(cfg.warmup_epochs, epoch, progress, by=cfg.warmup_by)


TINY = dict(dataset="synthetic", model="small_cnn", epochs=3, batch_size=64, n_train=256, n_val=64,
            lr=0.05, schedule="piecewise", milestones=(0.5,), augment=False)


class Killed(Exception):
    pass


def _metric_rows(run):
    rows = run.dir.read_jsonl("metrics.jsonl")
    for r in rows:
        r.pop("train_time", None)
    return rows


@pytest.mark.parametrize("where", ["after_epoch", "mid_epoch"])
def test_resumed_run_equals_uninterrupted_run(tmp_path, monkeypatch, where):
    # gaussian draws from the method generator; small_cnn's dropout draws from the global RNG.
    cfg = TrainConfig(method="gaussian", method_params={"sigma": 0.3}, **TINY)
    full = run_training(cfg, root=tmp_path / "a", device="cpu", progress=False)

    if where == "after_epoch":
        def kill(epoch, row):
            if epoch == 1:
                raise Killed
        with pytest.raises(Killed):
            run_training(cfg, root=tmp_path / "b", device="cpu", progress=False, control=Control(on_epoch_end=kill))
    else:
        original = methods.METHODS["gaussian"]
        calls = {"n": 0}

        def dying(model, x, y, mcfg, ctx):
            calls["n"] += 1
            if ctx.epoch == 2 and calls["n"] > 2 * 4 + 2:  # 4 batches per epoch: die inside epoch 3
                raise Killed
            return original.objective(model, x, y, mcfg, ctx)

        monkeypatch.setitem(methods.METHODS, "gaussian", original.__class__(
            original.name, original.config_cls, dying, original.passes, original.summary))
        with pytest.raises(Killed):
            run_training(cfg, root=tmp_path / "b", device="cpu", progress=False)
        monkeypatch.setitem(methods.METHODS, "gaussian", original)

    resumed_dir = next((tmp_path / "b" / "adhoc").iterdir())
    assert not (resumed_dir / "summary.json").exists()
    resumed = run_training(cfg, root=tmp_path / "b", device="cpu", progress=False)
    for which in ("last", "best"):
        a, b = full.load_model(which).state_dict(), resumed.load_model(which).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert _metric_rows(full) == _metric_rows(resumed)
    assert full.summary["best"] == resumed.summary["best"]


def test_finished_run_is_a_cache_hit(tmp_path, monkeypatch):
    cfg = TrainConfig(**TINY)
    first = run_training(cfg, root=tmp_path, device="cpu", progress=False)

    def no_training(*a, **k):
        raise AssertionError("a finished run must not be retrained")

    monkeypatch.setattr(train, "_Trainer", no_training)
    again = run_training(cfg, root=tmp_path, device="cpu", progress=False)
    assert again.dir.path == first.dir.path and again.summary == first.summary


def test_run_directory_holds_config_env_metrics_and_checkpoints(tmp_path):
    cfg = TrainConfig(**TINY)
    run = run_training(cfg, root=tmp_path, device="cpu", progress=False)
    files = {p.name for p in run.dir.path.iterdir()}
    assert {"config.json", "env.json", "metrics.jsonl", "summary.json",
            "checkpoint_last.pt", "checkpoint_best.pt"} <= files
    stored = json.loads((run.dir.path / "config.json").read_text())
    assert stored == json.loads(json.dumps({**cfg.to_dict(), "data_fingerprint": data.fingerprint("synthetic")}))
    env = json.loads((run.dir.path / "env.json").read_text())
    assert env["data_fingerprint"] == stored["data_fingerprint"] and env["code"]["rs_lib"]
    epochs = run.epochs()
    assert list(epochs["epoch"]) == [0, 1, 2] and (epochs["train_time"] > 0).all()
    assert len(run.iterations()) == 3 * 4
    assert not [p for p in run.dir.path.iterdir() if p.name.endswith(".tmp")]


def test_best_checkpoint_is_the_best_validation_epoch(tmp_path):
    run = run_training(TrainConfig(**TINY), root=tmp_path, device="cpu", progress=False)
    epochs = run.epochs()
    best = int(epochs["val_clean_acc"].idxmax())
    assert run.summary["best_epoch"] == int(epochs.loc[best, "epoch"])
    state = torch.load(run.dir.file("checkpoint_best.pt"), weights_only=False)
    assert state["epoch"] == run.summary["best_epoch"]


def test_standard_training_learns_the_synthetic_task(tmp_path):
    cfg = TrainConfig(**{**TINY, "model": "lenet", "epochs": 4, "n_train": 1024, "n_val": 256, "lr": 0.05})
    run = run_training(cfg, root=tmp_path, device="cpu", progress=False)
    assert run.summary["best"]["val_clean_acc"] > 0.6  # chance is 0.1


def test_piecewise_schedule_decays_at_milestones():
    cfg = TrainConfig(**{**TINY, "milestones": (0.5, 0.75), "lr_decay": 0.1})
    assert lr_factor(cfg, 0, 100) == 1.0 and lr_factor(cfg, 49, 100) == 1.0
    assert lr_factor(cfg, 50, 100) == pytest.approx(0.1) and lr_factor(cfg, 75, 100) == pytest.approx(0.01)


def test_cyclic_schedule_is_triangular_with_its_peak():
    cfg = TrainConfig(**{**TINY, "schedule": "cyclic", "peak": 0.4})
    values = [lr_factor(cfg, i, 100) for i in range(100)]
    assert values[0] == 0.0 and max(values) == pytest.approx(1.0) and values.index(max(values)) == 40
    assert values[-1] == pytest.approx(0.01 / 0.6)


def test_cyclic_schedule_with_peak_zero_decays_linearly_from_the_first_iteration():
    # the Backward Smoothing code's `cyclic`: CyclicLR(base_lr=0, max_lr, step_size_up=1), i.e. at the
    # peak after one iteration, then linear to 0 (Table 6)
    cfg = TrainConfig(**{**TINY, "schedule": "cyclic", "peak": 0.0})
    values = [lr_factor(cfg, i, 100) for i in range(100)]
    assert values[0] == 1.0 and values[50] == pytest.approx(0.5) and values[-1] == pytest.approx(0.01)
    with pytest.raises(ValueError, match="peak"):
        TrainConfig(**{**TINY, "schedule": "cyclic", "peak": 1.0})


def test_cosine_schedule_goes_from_one_to_zero():
    cfg = TrainConfig(**{**TINY, "schedule": "cosine"})
    assert lr_factor(cfg, 0, 100) == 1.0 and lr_factor(cfg, 50, 100) == pytest.approx(0.5)
    assert lr_factor(cfg, 99, 100) < 0.01


def test_warmup_factor_ramps_per_iteration_or_per_epoch():
    per_iter = TrainConfig(**{**TINY, "warmup_epochs": 2.0})
    assert warmup_factor(per_iter, 0, 0.5) == 0.25 and warmup_factor(per_iter, 3, 3.0) == 1.0
    per_epoch = TrainConfig(**{**TINY, "warmup_epochs": 10, "warmup_by": "epoch"})
    assert warmup_factor(per_epoch, 0, 0.7) == 0.1 and warmup_factor(per_epoch, 9, 9.5) == 1.0
    assert warmup_factor(TrainConfig(**TINY), 0, 0.0) == 1.0


def test_warmup_factor_reaches_the_objective(tmp_path, monkeypatch):
    seen = []
    original = methods.METHODS["standard"]

    def spy(model, x, y, mcfg, ctx):
        seen.append(ctx.warmup)
        return original.objective(model, x, y, mcfg, ctx)

    monkeypatch.setitem(methods.METHODS, "standard", original.__class__(
        original.name, original.config_cls, spy, original.passes, original.summary))
    run_training(TrainConfig(**{**TINY, "warmup_epochs": 2.0}), root=tmp_path, device="cpu", progress=False)
    assert seen[0] == 0.0 and seen[4] == 0.5 and seen[-1] == 1.0


def test_objective_that_leaves_eval_mode_is_an_error(tmp_path, monkeypatch):
    original = methods.METHODS["standard"]

    def careless(model, x, y, mcfg, ctx):
        out = original.objective(model, x, y, mcfg, ctx)
        model.eval()
        return out

    monkeypatch.setitem(methods.METHODS, "standard", original.__class__(
        original.name, original.config_cls, careless, original.passes, original.summary))
    with pytest.raises(RuntimeError, match="eval mode"):
        run_training(TrainConfig(**TINY), root=tmp_path, device="cpu", progress=False)


def test_different_configs_get_different_run_directories(tmp_path):
    a = run_training(TrainConfig(**{**TINY, "epochs": 1}), root=tmp_path, device="cpu", progress=False)
    b = run_training(TrainConfig(**{**TINY, "epochs": 1, "seed": 1}), root=tmp_path, device="cpu", progress=False)
    assert a.dir.path != b.dir.path


def test_kept_epoch_checkpoints_hold_that_epochs_weights(tmp_path):
    cfg = TrainConfig(**{**TINY, "keep_epochs": (0, 2)})
    run = run_training(cfg, root=tmp_path, device="cpu", progress=False)
    last, kept = run.load_model("last").state_dict(), run.load_model(2).state_dict()
    assert all(torch.equal(last[k], kept[k]) for k in last)
    first = run.load_model(0).state_dict()
    assert not all(torch.equal(last[k], first[k]) for k in last)
    with pytest.raises(ValueError, match="which"):
        run.load_model(1)
    with pytest.raises(ValueError, match="keep_epochs"):
        TrainConfig(**{**TINY, "keep_epochs": (3,)})


def test_max_iterations_stops_early_only_in_a_scratch_root(tmp_path, monkeypatch):
    cfg = TrainConfig(**TINY)                      # 4 batches per epoch, 3 epochs
    scratch = tmp_path / "scratch"
    short = run_training(cfg, root=scratch, device="cpu", progress=False, control=Control(max_iterations=6))
    rows = short.dir.read_jsonl("metrics.jsonl")
    assert [r["iter"] for r in rows if r["kind"] == "iter"] == list(range(6))
    assert [r["epoch"] for r in rows if r["kind"] == "epoch"] == [0, 1]
    assert short.summary["max_iterations"] == 6
    assert short.dir.path.name == train.run_dir_for(cfg, root=scratch).path.name   # the key plan.run_job reads
    with pytest.raises(ValueError, match="cut short at max_iterations=6"):
        run_training(cfg, root=scratch, device="cpu", progress=False)   # never taken for the finished run
    monkeypatch.setenv("RS_RESULTS", str(tmp_path / "store"))
    for root in (None, tmp_path / "store"):
        with pytest.raises(ValueError, match="explicit scratch root"):
            run_training(cfg, root=root, device="cpu", control=Control(max_iterations=2))
    assert not (tmp_path / "store").exists()
    with pytest.raises(ValueError, match="max_iterations"):
        run_training(cfg, root=scratch, device="cpu", control=Control(max_iterations=0))


def test_cli_train_help_lists_every_train_config_field():
    """The CLI's train flags are made from TrainConfig's fields: none is missing from --help."""
    import dataclasses
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root), "COLUMNS": "200"}
    out = subprocess.run([sys.executable, "-m", "rs_lib", "train", "--help"], capture_output=True, text=True,
                         check=True, cwd=root, env=env).stdout
    missing = [f.name for f in dataclasses.fields(TrainConfig) if "--" + f.name.replace("_", "-") not in out]
    assert missing == []


def test_cli_train_flags_reach_every_field_with_trainconfig_defaults():
    from rs_lib.__main__ import _train_config, build_parser

    def config(*argv):
        return _train_config(build_parser().parse_args(["train", *argv]))

    assert config() == TrainConfig()   # every default lives in TrainConfig
    cfg = config("--schedule", "cyclic", "--peak", "0", "--warmup-by", "epoch", "--keep-epochs", "0", "2",
                 "--val-size", "500", "--no-augment", "--nesterov", "--param", "sigma=0.5", "--method", "gaussian",
                 "--eval-param", "eps=0.1", "--milestones", "0.3", "0.6")
    assert (cfg.peak, cfg.warmup_by, cfg.keep_epochs, cfg.val_size) == (0.0, "epoch", (0, 2), 500)
    assert (cfg.augment, cfg.nesterov, cfg.method_params, cfg.eval_params) == (False, True, {"sigma": 0.5},
                                                                               {"eps": 0.1})
    assert cfg.milestones == (0.3, 0.6)
    assert config("--method-params", "sigma=0.25", "--method", "gaussian").method_params == {"sigma": 0.25}


def test_run_open_serves_a_run_folder_and_a_checkpoint_file_with_one_default(tmp_path):
    run = run_training(TrainConfig(**{**TINY, "epochs": 1}), root=tmp_path, device="cpu", progress=False)
    assert train.DEFAULT_CHECKPOINT == "last"
    opened = train.Run.open(run.dir.path)
    assert opened.config == run.config and opened.dir.path == run.dir.path
    default, last = opened.load_model().state_dict(), run.load_model("last").state_dict()
    assert all(torch.equal(default[k], last[k]) for k in last)
    from_file = train.Run.open(run.dir.file("checkpoint_best.pt"))
    best, mine = run.load_model("best").state_dict(), from_file.load_model().state_dict()
    assert from_file.config == run.config and all(torch.equal(best[k], mine[k]) for k in best)
    with pytest.raises(ValueError, match="which"):
        from_file.load_model("last")   # a checkpoint file is the model it names
    with pytest.raises(ValueError, match="does not exist"):
        train.Run.open(tmp_path / "absent.pt")


def test_cli_help_states_the_default_checkpoint(capsys):
    from rs_lib.__main__ import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["certify", "--help"])
    assert f"(default: {train.DEFAULT_CHECKPOINT}" in " ".join(capsys.readouterr().out.split())
