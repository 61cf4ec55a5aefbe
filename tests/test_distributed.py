"""Data-parallel training: 2 processes (torchrun, gloo, CPU) give the 1-process run's weights,
resume after a kill, bad world sizes are errors before anything is written, and the pieces
(batch shards, split-invariant draws, the SLURM environment) are what the loop relies on."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rs_lib import data, distributed
from rs_lib.train import TrainConfig, run_dir_for, run_training

REPO = Path(__file__).resolve().parent.parent
WORKER = Path(__file__).resolve().parent / "distributed_worker.py"
# 53 = 3 * 16 + 5: the last batch splits unevenly (3 + 2) over two ranks.
TINY = dict(dataset="synthetic", model="lenet", epochs=2, batch_size=16, n_train=53, n_val=32,
            lr=0.05, augment=False)
CONFIGS = {  # a BatchNorm-free model; one deterministic method and two randomized ones
    "standard": dict(method="standard", **TINY),
    "gaussian": dict(method="gaussian", method_params={"sigma": 0.3}, **TINY),
    "fast_at": dict(method="fast_at", **TINY),   # uniform random start in the eps-ball
}


def _torchrun(tmp_path: Path, configs: list[dict], root: Path, *, kill_after_epoch=None,
              nproc: int = 2, cli: list[str] | None = None) -> subprocess.CompletedProcess:
    """``torchrun`` of the worker on ``configs`` (or, with ``cli``, of ``-m rs_lib train CLI...``)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    for name in distributed.ENV_VARS:
        env.pop(name, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    if cli is not None:
        cmd += ["-m", "rs_lib", "train", *cli, "--results", str(root)]
    else:
        spec = tmp_path / f"spec-{len(list(tmp_path.glob('spec-*')))}.json"
        spec.write_text(json.dumps({"root": str(root), "configs": configs, "kill_after_epoch": kill_after_epoch}))
        cmd += [str(WORKER), str(spec)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    root = tmp_path_factory.mktemp("one")
    return {name: run_training(TrainConfig(**kw), root=root, device="cpu", progress=False)
            for name, kw in CONFIGS.items()}


def _assert_same_weights(a, b):
    sa, sb = a.load_model("last").state_dict(), b.load_model("last").state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=1e-4, atol=1e-5, msg=f"{k} differs")


def _iter_losses(run):
    return [r["loss"] for r in run.dir.read_jsonl("metrics.jsonl") if r["kind"] == "iter"]


# BatchNorm: per-rank batch statistics (as nn.DataParallel), so only that it trains and is whole.
BATCHNORM = dict(method="gaussian", method_params={"sigma": 0.3}, **{**TINY, "model": "resnet20"})


def test_two_process_training_equals_one_process_run(tmp_path, one_process):
    root = tmp_path / "two"
    done = _torchrun(tmp_path, [*CONFIGS.values(), BATCHNORM], root)
    assert done.returncode == 0, done.stderr[-3000:]
    bn = run_training(TrainConfig(**BATCHNORM), root=root, device="cpu")
    assert bn.summary["world_size"] == 2
    state = bn.load_model("last").state_dict()
    assert all(torch.isfinite(v.float()).all() for v in state.values())
    assert int(state["model.bn1.num_batches_tracked"]) == 2 * 4   # rank 0's statistics, one per step
    for name, kw in CONFIGS.items():
        single = one_process[name]
        two = run_dir_for(TrainConfig(**kw), root=root)
        assert two.path.name == single.dir.path.name          # the key ignores the world size
        assert two.finished and two.read_json("env.json")["world_size"] == 2
        assert single.dir.read_json("env.json")["world_size"] == 1
        run = run_training(TrainConfig(**kw), root=root, device="cpu")   # a cache hit
        _assert_same_weights(single, run)
        torch.testing.assert_close(torch.tensor(_iter_losses(run)), torch.tensor(_iter_losses(single)),
                                   rtol=1e-4, atol=1e-5)
        assert len(_iter_losses(run)) == 2 * 4                 # 4 global batches per epoch, not 8


def test_two_process_run_resumes_after_a_kill(tmp_path, one_process):
    root, kw = tmp_path / "two", CONFIGS["gaussian"]
    killed = _torchrun(tmp_path, [kw], root, kill_after_epoch=0)
    assert killed.returncode != 0
    run_dir = run_dir_for(TrainConfig(**kw), root=root)
    assert (run_dir.path / "checkpoint_last.pt").exists() and not run_dir.finished
    # The README's command: torchrun -m rs_lib train (the CLI's key is the API's key).
    resumed = _torchrun(tmp_path, [], root, cli=[
        "--method", "gaussian", "--param", "sigma=0.3", "--dataset", "synthetic", "--model", "lenet",
        "--epochs", "2", "--batch-size", "16", "--n-train", "53", "--n-val", "32", "--lr", "0.05",
        "--no-augment", "--device", "cpu", "--no-progress"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stdout.count("run: ") == 1 and run_dir.path.name in resumed.stdout   # rank 0 reports
    run = run_training(TrainConfig(**kw), root=root, device="cpu")
    _assert_same_weights(one_process["gaussian"], run)
    epochs = [r["epoch"] for r in run.dir.read_jsonl("metrics.jsonl") if r["kind"] == "epoch"]
    assert epochs == [0, 1] and run.summary["epochs"] == 2


def _fake_world(monkeypatch, rank: int, size: int) -> None:
    monkeypatch.setenv("RANK", str(rank))
    monkeypatch.setenv("WORLD_SIZE", str(size))
    monkeypatch.setenv("LOCAL_RANK", str(rank))
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29500")


def test_world_size_that_does_not_divide_the_batch_is_an_error_before_anything(tmp_path, monkeypatch):
    _fake_world(monkeypatch, 0, 3)
    with pytest.raises(ValueError, match=r"batch_size=16 is not divisible by the world size 3.*2 or 1"):
        run_training(TrainConfig(**CONFIGS["standard"]), root=tmp_path, device="cpu")
    _fake_world(monkeypatch, 0, 2)
    with pytest.raises(ValueError, match="last batch of each epoch holds 1 of 49"):
        run_training(TrainConfig(**{**CONFIGS["standard"], "n_train": 49}), root=tmp_path, device="cpu")
    assert not any(tmp_path.iterdir())
    assert not torch.distributed.is_initialized()


def test_world_from_env_reads_torchrun_variables_and_rejects_bad_ones():
    assert distributed.world_from_env({}) == distributed.World(0, 1, 0)
    env = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "MASTER_ADDR": "n1", "MASTER_PORT": "1"}
    assert distributed.world_from_env(env) == distributed.World(3, 4, 1)
    with pytest.raises(ValueError, match="0 <= RANK < WORLD_SIZE"):
        distributed.world_from_env({**env, "RANK": "4"})
    with pytest.raises(ValueError, match="RANK='x' must be an integer"):
        distributed.world_from_env({**env, "RANK": "x"})
    with pytest.raises(ValueError, match="MASTER_PORT unset"):
        distributed.world_from_env({k: v for k, v in env.items() if k != "MASTER_PORT"})


def test_submitit_slurm_job_exports_the_same_variables(monkeypatch):
    for name in distributed.ENV_VARS + ("LOCAL_WORLD_SIZE",):
        monkeypatch.delenv(name, raising=False)
    slurm = {"SUBMITIT_EXECUTOR": "slurm", "SLURM_JOB_ID": "4242", "SLURM_NTASKS": "8",
             "SLURM_JOB_NUM_NODES": "2", "SLURM_NODEID": "1", "SLURM_JOB_NODELIST": "gpu[07-08]",
             "SLURM_PROCID": "5", "SLURM_LOCALID": "1"}
    for k, v in slurm.items():
        monkeypatch.setenv(k, v)
    world = distributed.world_from_env()
    assert world == distributed.World(rank=5, size=8, local_rank=1)
    assert os.environ["MASTER_ADDR"] == "gpu07" and int(os.environ["MASTER_PORT"]) > 0


def test_batch_shards_partition_the_one_process_batches():
    d = data.make_synthetic(size=53, shape=(3, 8, 8))
    d = data.ImageData(d.images, d.labels, data.DatasetInfo("x", 10, (3, 8, 8), (0.5,) * 3, (0.25,) * 3,
                                                             augment="crop_flip"))

    def run(shard):
        g = torch.Generator().manual_seed(5)
        return list(data.batches(d, 16, shuffle=True, augment=True, generator=g, shard=shard))

    whole = run(None)
    parts = [run((r, 3)) for r in range(3)]
    for b, (x, y) in enumerate(whole):
        assert torch.equal(torch.cat([p[b][0] for p in parts]), x)
        assert torch.equal(torch.cat([p[b][1] for p in parts]), y)
    assert [len(p[-1][1]) for p in parts] == [2, 2, 1]        # 5 = 2 + 2 + 1
    with pytest.raises(ValueError, match="shard must be"):
        data.batches(d, 16, shard=(3, 3))


def test_split_draws_give_each_rank_its_slice_of_the_global_draws():
    g = torch.Generator().manual_seed(0)
    noise, start, psi, scalar = (torch.randn((5, 2, 3), generator=g), torch.rand((5,), generator=g),
                                 torch.rand((4, 5, 7), generator=g), torch.randint(0, 9, (1,), generator=g))
    g.manual_seed(0)
    other = torch.Generator().manual_seed(1)
    with distributed.SplitDraws(g, start=3, stop=5, n_global=5):
        part = (torch.randn((2, 2, 3), generator=g), torch.rand(2, generator=g),
                torch.rand((4, 2, 7), generator=g), torch.randint(0, 9, (1,), generator=g))
        untouched = torch.rand((2,), generator=other)
    assert torch.equal(part[0], noise[3:]) and torch.equal(part[1], start[3:])
    assert torch.equal(part[2], psi[:, 3:]) and torch.equal(part[3], scalar)
    assert torch.equal(untouched, torch.rand((2,), generator=torch.Generator().manual_seed(1)))


def test_shard_bounds_cover_every_item_once():
    for n in range(0, 12):
        bounds = [distributed.shard_bounds(n, r, 4) for r in range(4)]
        assert bounds[0][0] == 0 and bounds[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
        assert max(b - a for a, b in bounds) - min(b - a for a, b in bounds) <= 1
