"""Many writers on one store: per-result locks (two real processes), stale locks, read-only mode."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from helpers import certify_run
from rs_lib import lock, smoothing, train
from rs_lib.train import TrainConfig, run_training

REPO = Path(__file__).resolve().parent.parent
TINY = dict(dataset="synthetic", model="small_cnn", epochs=3, batch_size=64, n_train=256, n_val=64,
            lr=0.05, schedule="piecewise", milestones=(0.5,), augment=False)
WAIT_S = 600          # upper bound of any wait below (a stuck test fails instead of hanging; generous for a loaded machine)


def _spawn(code: str, root: Path, **env: str) -> subprocess.Popen:
    full_env = {**os.environ, "RS_RESULTS": str(root), "OMP_NUM_THREADS": "1",
                "PYTHONPATH": str(REPO), **env}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=full_env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(predicate, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _read_until(stream, marker: str) -> str:
    seen = ""
    for line in stream:
        seen += line
        if marker in line:
            return seen
    raise AssertionError(f"stream ended without {marker!r}:\n{seen}")


TRAIN = """
import sys, time
from pathlib import Path
import torch
torch.set_num_threads(1)
from rs_lib.train import Control, TrainConfig, run_training
flag = Path(sys.argv[1]) if len(sys.argv) > 1 else None
def hold_after_first_epoch(epoch, row):
    while flag is not None and epoch == 0 and not flag.exists():
        time.sleep(0.05)
run = run_training(TrainConfig(**{tiny}), experiment="race", progress=False,
                   control=Control(on_epoch_end=hold_after_first_epoch if {first} else None))
print("RUN", run.dir.path, flush=True)
"""


def test_two_processes_training_one_config_leave_one_run_with_rows_not_doubled(tmp_path):
    root, flag = tmp_path / "results", tmp_path / "go"
    first = subprocess.Popen([sys.executable, "-c", textwrap.dedent(TRAIN.format(tiny=TINY, first=True)), str(flag)],
                             env={**os.environ, "RS_RESULTS": str(root), "OMP_NUM_THREADS": "1",
                                  "PYTHONPATH": str(REPO)},
                             cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run_dir = train.run_dir_for(TrainConfig(**TINY), experiment="race", root=root).path
    _wait_for(lambda: (run_dir / "metrics.jsonl").exists() and '"kind": "epoch"' in (run_dir / "metrics.jsonl").read_text(),
              "the first process's first epoch")
    second = _spawn(TRAIN.format(tiny=TINY, first=False), root)
    waited = _read_until(second.stderr, "waiting for")      # the second process is blocked on the lock
    assert f"pid {first.pid}" in waited
    flag.touch()
    out1, err1 = first.communicate(timeout=WAIT_S)
    out2, err2 = second.communicate(timeout=WAIT_S)
    assert first.returncode == 0, err1
    assert second.returncode == 0, err2
    assert f"RUN {run_dir}" in out1 and f"RUN {run_dir}" in out2
    summary = json.loads((run_dir / "summary.json").read_text())
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    epochs = [r["epoch"] for r in rows if r["kind"] == "epoch"]
    iters = [r["iter"] for r in rows if r["kind"] == "iter"]
    assert summary["epochs"] == 3 and epochs == [0, 1, 2]
    assert iters == list(range(3 * 4))                       # 256 / 64 = 4 iterations per epoch, once each
    assert (run_dir / ".lock").read_text() == ""             # released: no holder named
    # the same weights as one uninterrupted process
    alone = run_training(TrainConfig(**TINY), experiment="alone", root=tmp_path / "alone", progress=False)
    ours = torch.load(run_dir / "checkpoint_last.pt", weights_only=False)["model"]
    theirs = torch.load(alone.dir.file("checkpoint_last.pt"), weights_only=False)["model"]
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


HOLD = """
import sys, time
from pathlib import Path
from rs_lib import lock
with lock.hold(sys.argv[1], what="test"):
    print("HELD", flush=True)
    time.sleep(600)
"""


def test_a_killed_holder_leaves_a_stale_lock_that_is_taken_over(tmp_path, capfd):
    path = tmp_path / "run" / ".lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], env={**os.environ, "PYTHONPATH": str(REPO)},
                              stdout=subprocess.PIPE, text=True)
    try:
        _read_until(holder.stdout, "HELD")
        assert lock.holder(path)["pid"] == holder.pid
        with pytest.raises(lock.LockTimeoutError, match=f"pid {holder.pid} on host .* still holds"):
            with lock.hold(path, what="second", timeout=0):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=WAIT_S)
    assert lock.holder(path)["pid"] == holder.pid            # the dead process is still named ...
    with lock.hold(path, what="after the kill", timeout=0):  # ... but the lock is free
        assert lock.holder(path)["pid"] == os.getpid()
    err = capfd.readouterr().err
    assert f"left by pid {holder.pid}" in err and "(stale)" in err
    assert lock.holder(path) is None


def test_hold_is_reentrant_within_a_process(tmp_path):
    path = tmp_path / "x.lock"
    with lock.hold(path, what="outer"):
        with lock.hold(path, what="inner", timeout=0):
            assert lock.holder(path)["pid"] == os.getpid()
        assert lock.holder(path)["pid"] == os.getpid()       # the inner release keeps the outer lock
    assert lock.holder(path) is None


CERTIFY = """
import sys, time
from pathlib import Path
import torch
torch.set_num_threads(1)
from torch import nn
from rs_lib import lock
from rs_lib.smoothing import CertifySettings, Smooth, certify_dataset
torch.manual_seed(1)
model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 4)).eval()
gen = torch.Generator().manual_seed(4)
images, labels = torch.rand(10, 1, 8, 8, generator=gen), torch.randint(0, 4, (10,), generator=gen)
out, flag = Path(sys.argv[1]), Path(sys.argv[2])
def certify():
    certify_dataset(Smooth(model, 4, 0.5), images, labels,
                    settings=CertifySettings(n0=20, n=200, alpha=0.01, batch_size=64), out_path=out, progress=False)
if sys.argv[3] == "first":
    with lock.hold(out.with_name(out.name + ".lock"), what="first"):
        print("HELD", flush=True)
        while not flag.exists():
            time.sleep(0.05)
        certify()
else:
    certify()
print("DONE", flush=True)
"""


def test_two_processes_certifying_into_one_file_leave_one_valid_tsv(tmp_path):
    out, flag = tmp_path / "cert.tsv", tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    procs = []
    first = subprocess.Popen([sys.executable, "-c", CERTIFY, str(out), str(flag), "first"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    procs.append(first)
    _read_until(first.stdout, "HELD")
    second = subprocess.Popen([sys.executable, "-c", CERTIFY, str(out), str(flag), "second"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert f"pid {first.pid}" in _read_until(second.stderr, "waiting for")
    flag.touch()
    for proc in (first, second):
        _, err = proc.communicate(timeout=WAIT_S)
        assert proc.returncode == 0, err
    frame = smoothing.read_certify_tsv(out)
    assert list(frame["idx"]) == list(range(10))              # every row once
    lines = out.read_text().splitlines()
    assert len(lines) == 11 and lines[0].startswith("idx\tlabel")
    # and a later resume accepts the file: nothing left to do, same rows
    torch.manual_seed(1)
    from torch import nn

    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 4)).eval()
    gen = torch.Generator().manual_seed(4)
    images, labels = torch.rand(10, 1, 8, 8, generator=gen), torch.randint(0, 4, (10,), generator=gen)
    settings = smoothing.CertifySettings(n0=20, n=200, alpha=0.01, batch_size=64)
    again = smoothing.certify_dataset(smoothing.Smooth(model, 4, 0.5), images, labels, settings=settings,
                                      out_path=out, progress=False)
    pd.testing.assert_frame_equal(again, frame)
    alone = smoothing.certify_dataset(smoothing.Smooth(model, 4, 0.5), images, labels, settings=settings,
                                      out_path=tmp_path / "alone.tsv", progress=False)
    pd.testing.assert_frame_equal(frame.drop(columns="time"), alone.drop(columns="time"))


# -- read-only mode ------------------------------------------------------------------------------

def test_read_only_refuses_to_train_a_missing_run_and_names_the_sweep(tmp_path, monkeypatch):
    monkeypatch.setenv(lock.READ_ONLY_ENV, "1")
    monkeypatch.setenv(lock.SWEEP_HINT_ENV, "python -m rs_lib sweep noise_training --profile smoke")
    cfg = TrainConfig(**TINY)
    path = train.run_dir_for(cfg, experiment="ro", root=tmp_path).path
    with pytest.raises(lock.MissingResultError, match=rf"{path}.*sweep noise_training --profile smoke"):
        run_training(cfg, experiment="ro", root=tmp_path, progress=False)
    assert not path.exists()                                   # nothing started


def test_read_only_reads_finished_runs_and_cached_results_but_computes_nothing(tmp_path, monkeypatch):
    cfg = TrainConfig(**{**TINY, "epochs": 1})
    run = run_training(cfg, experiment="ro", root=tmp_path, progress=False)
    assert run.cached("answer", {"a": 1}, lambda: 42) == 42
    monkeypatch.setenv(lock.READ_ONLY_ENV, "1")
    again = run_training(cfg, experiment="ro", root=tmp_path, progress=False)
    assert again.dir.path == run.dir.path
    assert again.cached("answer", {"a": 1}, lambda: pytest.fail("recomputed")) == 42
    with pytest.raises(lock.MissingResultError, match="evaluation 'answer-.*json' of run"):
        again.cached("answer", {"a": 2}, lambda: 43)
    with pytest.raises(lock.MissingResultError, match="certification 'certify-"):
        certify_run(again, n_points=2, n0=10, n=20, alpha=0.01, sigma=0.25, batch_size=10, progress=False)
