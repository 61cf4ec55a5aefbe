"""Nothing silently wrong, nothing lost (issue 10).

Two batteries.  The bad-input battery: every user mistake, through the CLI (in process) and the
Python API, ends in one error naming the argument or file (exit code 2 and no traceback on the
CLI, ``ValueError`` or a subclass in the API) and leaves the store as it was.  The fault battery:
each artefact of a finished run damaged in turn is detected, reported with the file, and the
recovery the message suggests (``python -m rs_lib discard``, then the same call) works.  Plus run
identity: a run trained on one data folder is never returned for another.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from helpers import certify_run
from rs_lib import attacks, data, evaluate, robustness, smoothing, store, train
from rs_lib.__main__ import main
from rs_lib.train import TrainConfig, run_training

REPO = Path(__file__).resolve().parent.parent
TINY = dict(dataset="synthetic", model="lenet", epochs=1, batch_size=32, n_train=64, n_val=32,
            method="gaussian", method_params={"sigma": 0.25}, augment=False)
TINY_ARGS = ["--dataset", "synthetic", "--model", "lenet", "--epochs", "1", "--batch-size", "32",
             "--n-train", "64", "--n-val", "32", "--method", "gaussian", "--param", "sigma=0.25",
             "--no-augment", "--no-progress"]
CERT = dict(split="test", n_points=4, n0=8, n=16, alpha=0.01, sigma=0.25, batch_size=16, progress=False)


def _snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes (to show that nothing changed)."""
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("RS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("RS_RESULTS", str(tmp_path / "store"))
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished tiny run (gaussian, sigma 0.25), trained once per module; copied by ``run_copy``."""
    root = tmp_path_factory.mktemp("finished")
    os.environ["RS_CACHE"] = str(root / "cache")
    run = run_training(TrainConfig(**TINY), root=root / "store", device="cpu", progress=False)
    certify_run(run, **CERT)
    return root / "store"


@pytest.fixture
def run_copy(finished, tmp_path):
    """A private copy of the finished run's store; returns the Run found through it."""
    shutil.copytree(finished, tmp_path / "store", dirs_exist_ok=True)
    return train.Run(train.run_dir_for(TrainConfig(**TINY), root=tmp_path / "store"), TrainConfig(**TINY))


def _fake_fmnist(folder: Path, seed: int, *, n_train: int = 200, n_test: int = 40) -> Path:
    rng = np.random.default_rng(seed)
    data.write_mnist_files(folder, rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
                           np.arange(n_train) % 10, part="train")
    data.write_mnist_files(folder, rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
                           np.arange(n_test) % 10, part="test")
    return folder


FM = dict(dataset="fashion-mnist", model="lenet", epochs=1, batch_size=50, n_val=16, augment=False)


# ======================================================================================

# Bad-input battery, CLI (in process)
# ======================================================================================


def _cli(argv: list[str], capsys, *names: str) -> str:
    """Run the CLI; assert exit 2, one 'error:' message naming each of ``names``, no traceback,
    and nothing new in the store.  Returns the message."""
    store_root = Path(os.environ["RS_RESULTS"])
    before = _snapshot(store_root)
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and "Traceback" not in err, err
    for name in names:
        assert name in err, (name, err)
    assert _snapshot(store_root) == before
    return err


def test_cli_explicit_data_root_without_the_dataset_is_an_error_not_a_fallback(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    _cli(["train", *TINY_ARGS[2:], "--dataset", "fashion-mnist", "--data-root", "empty"], capsys,
         "'empty'", "train-{images-idx3,labels-idx1}-ubyte")


def test_cli_misnamed_data_root_files_are_an_error(tmp_path, capsys):
    folder = _fake_fmnist(tmp_path / "fm", 0)
    (folder / "train-images-idx3-ubyte.gz").rename(folder / "train-images.gz")
    _cli(["train", *TINY_ARGS[2:], "--dataset", "fashion-mnist", "--data-root", "fm"], capsys, "'fm'")


def test_cli_rs_results_set_to_a_file(tmp_path, capsys, monkeypatch):
    (tmp_path / "afile").write_text("x")
    monkeypatch.setenv("RS_RESULTS", str(tmp_path / "afile"))
    _cli(["train", *TINY_ARGS], capsys, "RS_RESULTS")
    assert (tmp_path / "afile").read_text() == "x"


def test_cli_results_inside_a_file(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    _cli(["train", *TINY_ARGS, "--results", str(tmp_path / "afile" / "store")], capsys, "afile")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root may write anywhere")
def test_cli_read_only_store(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        _cli(["train", *TINY_ARGS, "--results", str(ro / "store")], capsys, "not writable", "ro")
    finally:
        ro.chmod(0o700)


@pytest.mark.parametrize("damage", ["truncated", "not_gzip"])
def test_cli_broken_gz_dataset_file_is_named(tmp_path, capsys, damage):
    folder = _fake_fmnist(tmp_path / "fm", 0)
    target = folder / "train-images-idx3-ubyte.gz"
    raw = target.read_bytes()
    target.write_bytes(raw[: len(raw) // 2] if damage == "truncated" else b"plain text, not gzip\n")
    _cli(["train", *TINY_ARGS[2:], "--dataset", "fashion-mnist", "--n-val", "16", "--data-root", "fm"],
         capsys, "train-images-idx3-ubyte.gz")


def test_cli_seed_past_2_64_writes_nothing(capsys):
    _cli(["train", *TINY_ARGS, "--seed", str(2**64 + 1)], capsys, "seed")
    assert not Path(os.environ["RS_RESULTS"]).exists()


@pytest.mark.parametrize("flag", ["--param", "--eval-param"])
def test_cli_repeated_key_is_an_error(capsys, flag):
    pair = ["sigma=0.25", "sigma=0.5"] if flag == "--param" else ["eps=0.1", "eps=0.2"]
    _cli(["train", *TINY_ARGS, flag, pair[0], flag, pair[1]], capsys, flag, "sigma" if flag == "--param" else "eps")


@pytest.mark.parametrize("damage,name", [("text", "is not a PyTorch checkpoint"),
                                         ("no_model", "no 'model' entry"),
                                         ("missing", "does not exist"),
                                         ("other_arch", "does not hold weights of a lenet")])
def test_cli_bad_checkpoint_is_named(run_copy, tmp_path, capsys, damage, name):
    path = tmp_path / "ckpt.pt"
    if damage == "text":
        path.write_text("these are not weights\n")
    elif damage == "no_model":
        torch.save({"weights": 1}, path)
    elif damage == "other_arch":
        state = torch.load(run_copy.dir.file("checkpoint_last.pt"), weights_only=False)
        state["model"] = nn.Linear(3, 2).state_dict()
        torch.save(state, path)
    _cli(["certify", "--checkpoint", str(path), "--n", "16", "--out", "c.tsv"], capsys, "ckpt.pt", name)
    assert not (tmp_path / "c.tsv").exists()


@pytest.mark.parametrize("content", [b"my notes\nline two\n", b"no newline at the end", b"",
                                     b"idx\tlabel\tpredict\tradius\tcorrect\ttime\tp_lower\tcount\tn\n0\t1\t"])
def test_cli_certify_out_on_a_foreign_file_leaves_it_byte_identical(run_copy, tmp_path, capsys, content):
    out = tmp_path / "mine.tsv"
    out.write_bytes(content)
    _cli(["certify", "--run", str(run_copy.dir.path), "--n", "16", "--out", str(out)], capsys, "mine.tsv")
    assert out.read_bytes() == content and not (tmp_path / "mine.tsv.meta.json").exists()


@pytest.mark.parametrize("kind", ["foreign", "shard"])
def test_merge_refuses_to_overwrite_what_is_not_an_earlier_merge(run_copy, tmp_path, kind):
    tsv = next(run_copy.dir.path.glob("certify-*.tsv"))
    target = tmp_path / "merged.tsv"
    if kind == "foreign":
        target.write_bytes(b"my notes")
    else:
        shutil.copy(tsv, target)
        shutil.copy(tsv.with_name(tsv.name + ".meta.json"), tmp_path / "merged.tsv.meta.json")
    before = target.read_bytes()
    with pytest.raises(ValueError, match="merged.tsv"):
        smoothing.merge_certify_tsv([tsv], target)
    assert target.read_bytes() == before


def test_cli_certify_out_is_a_directory(run_copy, tmp_path, capsys):
    (tmp_path / "outdir").mkdir()
    _cli(["certify", "--run", str(run_copy.dir.path), "--out", "outdir"], capsys, "--out", "outdir")
    assert list((tmp_path / "outdir").iterdir()) == []


def test_cli_certify_out_in_a_missing_folder(run_copy, capsys):
    _cli(["certify", "--run", str(run_copy.dir.path), "--out", "nowhere/c.tsv"], capsys, "--out", "nowhere")


def test_cli_certify_start_past_the_end(run_copy, tmp_path, capsys):
    _cli(["certify", "--run", str(run_copy.dir.path), "--n", "16", "--start", "5000", "--out", "c.tsv"],
         capsys, "--start", "1000")
    assert not (tmp_path / "c.tsv").exists()


def test_cli_certify_torn_sidecar_is_named(run_copy, tmp_path, capsys):
    out = tmp_path / "c.tsv"
    assert main(["certify", "--run", str(run_copy.dir.path), "--n0", "8", "--n", "16", "--batch", "16",
                 "--stop", "2", "--out", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    meta = tmp_path / "c.tsv.meta.json"
    meta.write_bytes(meta.read_bytes()[:20])
    before = out.read_bytes()
    _cli(["certify", "--run", str(run_copy.dir.path), "--n0", "8", "--n", "16", "--batch", "16",
          "--stop", "4", "--out", str(out)], capsys, "c.tsv.meta.json", "line", "discard")
    assert out.read_bytes() == before


@pytest.mark.parametrize("which", ["middle"])
def test_cli_certify_bad_which(run_copy, capsys, which):
    _cli(["certify", "--run", str(run_copy.dir.path), "--which", which, "--out", "c.tsv"], capsys, "--which")


def test_cli_run_that_is_not_a_run_directory(tmp_path, capsys):
    (tmp_path / "folder").mkdir()
    _cli(["certify", "--run", "folder", "--out", "c.tsv"], capsys, "--run", "folder", "config.json")
    _cli(["certify", "--run", "absent", "--out", "c.tsv"], capsys, "--run", "absent")


def test_cli_unfinished_run_is_refused(run_copy, capsys):
    run_copy.dir.file("summary.json").unlink()
    _cli(["evaluate", "--run", str(run_copy.dir.path), "--eps", "0.1"], capsys, "unfinished", "--run")


def test_cli_evaluate_seed_past_2_63(run_copy, capsys):
    _cli(["evaluate", "--run", str(run_copy.dir.path), "--eps", "0.1", "--seed", str(2**64)], capsys, "--seed")


def test_kill_between_recording_and_replacing_a_checkpoint_still_resumes(tmp_path, monkeypatch):
    cfg = TrainConfig(**{**TINY, "epochs": 2})
    real = store.atomic_write_bytes

    def killed_after_recording(path, data):
        if path.name == "checkpoint_last.pt" and path.exists():   # epoch 2's checkpoint
            raise KeyboardInterrupt
        real(path, data)

    monkeypatch.setattr(store, "atomic_write_bytes", killed_after_recording)
    with pytest.raises(KeyboardInterrupt):
        run_training(cfg, device="cpu", progress=False)
    monkeypatch.setattr(store, "atomic_write_bytes", real)
    resumed = run_training(cfg, device="cpu", progress=False)
    resumed.dir.verify()
    full = run_training(cfg, root=tmp_path / "other", device="cpu", progress=False)
    a, b = full.load_model("last").state_dict(), resumed.load_model("last").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("eps", ["8", "-0.1", "0", "nan"])
def test_cli_evaluate_eps_outside_the_threat_model(run_copy, capsys, eps):
    _cli(["evaluate", "--run", str(run_copy.dir.path), "--eps", eps], capsys, "--eps")


def test_cli_book_misspelled_parameter_is_an_error(capsys):
    _cli(["book", "--profile", "smoke", "--notebooks", "noise_training", "--no-build", "--param", "epoch=5"],
         capsys, "'epoch'", "noise_training")


def test_cli_book_repeated_parameter_is_an_error(capsys):
    _cli(["book", "--profile", "smoke", "--notebooks", "noise_training", "--no-build",
          "-p", "epochs=5", "-p", "epochs=6"], capsys, "--param", "epochs")


def test_cli_discard_refuses_what_is_not_a_store_entry(tmp_path, capsys):
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "keep.txt").write_text("mine")
    (tmp_path / "notes.txt").write_text("mine")
    for target in ("folder", "notes.txt", "absent"):
        _cli(["discard", target], capsys, target)
    assert (tmp_path / "folder" / "keep.txt").read_text() == "mine" and (tmp_path / "notes.txt").exists()


@pytest.mark.parametrize("argv,where", [
    (["train", "--dataset", "fashion-mnist", "--data-root", "empty"], "empty"),
    (["certify", "--checkpoint", "notes.txt", "--out", "c.tsv"], "notes.txt"),
])
def test_cli_user_errors_end_in_one_line_without_traceback_end_to_end(tmp_path, argv, where):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("not a checkpoint\n")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "rs_lib", *argv, "--no-progress"], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=120)
    assert done.returncode == 2 and done.stderr.startswith("error: ") and where in done.stderr
    assert "Traceback" not in done.stderr
    debug = subprocess.run([sys.executable, "-m", "rs_lib", *argv, "--debug"], capture_output=True,
                           text=True, env=env, cwd=tmp_path, timeout=120)
    assert debug.returncode == 1 and "Traceback" in debug.stderr


# ======================================================================================

# Bad-input battery, Python API
# ======================================================================================


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).eval()


def _xy() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.rand(4, 1, 4, 4), torch.tensor([0, 1, 2, 1])


@pytest.mark.parametrize("attack", ["pgd", "smoothadv_pgd"])
@pytest.mark.parametrize("bad,name", [("nan", "NaN"), ("inf", "NaN or infinite"), ("above", r"\[0, 1\]"),
                                      ("negative_label", "y must lie"), ("label_too_big", "3 outputs")])
def test_attacks_reject_bad_images_and_labels(attack, bad, name):
    x, y = _xy()
    if bad == "nan":
        x[0, 0, 0, 0] = float("nan")
    elif bad == "inf":
        x[1, 0, 1, 1] = float("inf")
    elif bad == "above":
        x[2] += 1.5
    elif bad == "negative_label":
        y[0] = -1
    else:
        y[0] = 3
    with pytest.raises(ValueError, match=name):
        if attack == "pgd":
            attacks.pgd(_model(), x, y, attacks.PGD(eps=0.1, step_size=0.05, steps=2))
        else:
            attacks.smoothadv_pgd(_model(), x, y, attacks.SmoothAdvPGD(eps=0.5, steps=1, sigma=0.25, num_noise=2))


def test_robust_accuracy_checks_the_output_width_against_n_classes():
    x, y = _xy()
    with pytest.raises(ValueError, match="num_classes"):
        robustness.robust_accuracy(_model(), (x, y), eps=0.1, protocol="pgd20_bs", n_classes=10, progress=False)


def test_robust_accuracy_checks_labels_against_the_model():
    x, y = _xy()
    y[0] = 7
    with pytest.raises(ValueError, match="y"):
        robustness.robust_accuracy(_model(), (x, y), eps=0.1, protocol="pgd20_bs", progress=False)


def test_clean_evaluation_rejects_nan_images():
    x, y = _xy()
    x[0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        evaluate.evaluate(_model(), [(x, y)], ["clean"])


def test_certify_dataset_rejects_labels_outside_num_classes(tmp_path):
    x, y = _xy()
    y[1] = 5
    smooth = smoothing.Smooth(_model(), 3, 0.25)
    with pytest.raises(ValueError, match="labels"):
        smoothing.certify_dataset(smooth, x, y, settings=smoothing.CertifySettings(n0=4, n=8, alpha=0.01, batch_size=8),
                                  out_path=tmp_path / "c.tsv", progress=False)
    assert not (tmp_path / "c.tsv").exists()


def test_smooth_rejects_a_model_of_another_width():
    x, _ = _xy()
    with pytest.raises(ValueError, match="num_classes"):
        smoothing.Smooth(_model(), 10, 0.25).predict(x[0], n=8, alpha=0.01, batch_size=8)


def test_api_seed_past_2_64_writes_nothing(tmp_path):
    with pytest.raises(ValueError, match="seed"):
        run_training(TrainConfig(**{**TINY, "seed": 2**64}), root=tmp_path / "s", progress=False)
    assert not (tmp_path / "s").exists()


def test_api_explicit_data_root_without_the_dataset_raises_dataset_not_found(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(data.DatasetNotFoundError, match="empty"):
        run_training(TrainConfig(**FM), root=tmp_path / "s", data_root=tmp_path / "empty", progress=False)
    with pytest.raises(data.DatasetNotFoundError, match="given explicitly"):
        data.fingerprint("fashion-mnist", root=tmp_path / "empty")
    assert not (tmp_path / "s").exists()


def test_read_idx_names_a_truncated_file(tmp_path):
    path = data.write_idx(tmp_path / "x-idx3-ubyte", np.zeros((4, 28, 28), np.uint8))
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="x-idx3-ubyte.*truncated"):
        data.read_idx(path)


def test_torn_json_and_jsonl_name_file_and_line(tmp_path):
    (tmp_path / "a.json").write_text('{\n  "a": 1,\n  "b": ')
    with pytest.raises(store.CorruptFileError, match=r"a.json line 3"):
        store.read_json(tmp_path / "a.json")
    (tmp_path / "m.jsonl").write_text('{"a": 1}\n{"a": 2\n{"a": 3}\n')
    with pytest.raises(store.CorruptFileError, match=r"m.jsonl line 2"):
        store.read_jsonl(tmp_path / "m.jsonl")
    (tmp_path / "t.jsonl").write_text('{"a": 1}\n{"a": ')
    assert store.read_jsonl(tmp_path / "t.jsonl", drop_torn_tail=True) == [{"a": 1}]


def test_torn_metrics_line_in_the_middle_blocks_a_resume_naming_file_and_line(run_copy):
    run_copy.dir.file("summary.json").unlink()
    path = run_copy.dir.file("metrics.jsonl")
    lines = path.read_text().splitlines(keepends=True)
    path.write_text(lines[0] + lines[1][:10] + "\n" + "".join(lines[2:]))
    with pytest.raises(store.CorruptFileError, match="metrics.jsonl line 2"):
        run_training(TrainConfig(**TINY), device="cpu", progress=False)


# ======================================================================================

# Fault battery: a finished run damaged in turn
# ======================================================================================


ARTEFACTS = ["checkpoint_best.pt", "checkpoint_last.pt", "config.json", "summary.json", "metrics.jsonl",
             "manifest.json"]


def _recover_and_check(run_dir: Path, capsys) -> None:
    """The recovery the message gives: discard the run, then the same call recomputes it whole."""
    assert main(["discard", str(run_dir)]) == 0
    assert "moved" in capsys.readouterr().out and not run_dir.exists()
    assert len(list((run_dir.parent / store.DISCARDED).iterdir())) == 1
    again = run_training(TrainConfig(**TINY), device="cpu", progress=False)
    assert again.dir.path == run_dir
    again.dir.verify()
    again.load_model("best")


@pytest.mark.parametrize("name", ARTEFACTS)
def test_truncated_artefact_is_detected_named_and_recovered(run_copy, capsys, name):
    path = run_copy.dir.file(name)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(store.DamagedRunError, match=name) as caught:
        run_training(TrainConfig(**TINY), device="cpu", progress=False)
    assert f"python -m rs_lib discard {run_copy.dir.path}" in str(caught.value)
    _cli(["certify", "--run", str(run_copy.dir.path), "--n", "16", "--out", "c.tsv"], capsys, name, "discard")
    _recover_and_check(run_copy.dir.path, capsys)


def test_checkpoint_with_the_right_size_but_other_bytes_is_caught_when_loaded(run_copy):
    path = run_copy.dir.file("checkpoint_best.pt")
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    run_copy.dir.verify()   # the cheap check (sizes) passes ...
    with pytest.raises(store.DamagedRunError, match="checkpoint_best.pt"):
        run_copy.load_model("best")   # ... the digest, checked on load, does not


def test_edited_config_is_refused_saying_what_differs(run_copy, capsys):
    path = run_copy.dir.file("config.json")
    config = json.loads(path.read_text())
    config["method_params"]["sigma"] = 0.5
    path.write_text(json.dumps(config, indent=2))
    with pytest.raises(store.DamagedRunError, match=r"method_params.sigma: 0.25 -> 0.5"):
        run_training(TrainConfig(**TINY), device="cpu", progress=False)
    # read from the folder alone (no expected config), the checkpoint says what it was
    _cli(["certify", "--run", str(run_copy.dir.path), "--n", "16", "--out", "c.tsv"], capsys,
         "config.json", "method_params.sigma: 0.25 -> 0.5")
    _recover_and_check(run_copy.dir.path, capsys)


@pytest.mark.parametrize("which", ["tsv", "sidecar"])
def test_truncated_certification_is_detected_named_and_recovered(run_copy, capsys, which):
    tsv = next(run_copy.dir.path.glob("certify-*.tsv"))
    original = smoothing.read_certify_tsv(tsv)
    path = tsv if which == "tsv" else tsv.with_name(tsv.name + ".meta.json")
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[: len(lines) // 2]))
    with pytest.raises(store.DamagedFileError, match=path.name) as caught:
        certify_run(run_copy, **CERT)
    assert f"python -m rs_lib discard {tsv}" in str(caught.value)
    assert main(["discard", str(tsv)]) == 0
    capsys.readouterr()
    assert not tsv.exists() and not tsv.with_name(tsv.name + ".meta.json").exists()
    again = certify_run(run_copy, **CERT)
    cols = ["idx", "label", "predict", "radius", "correct", "p_lower", "count", "n"]
    assert again[cols].equals(original[cols])


def test_swapped_data_folder_gives_another_run_and_leaves_the_first(tmp_path):
    folder = _fake_fmnist(tmp_path / "fm", 0)
    first = run_training(TrainConfig(**FM), data_root=folder, device="cpu", progress=False)
    first_files = _snapshot(first.dir.path)
    shutil.rmtree(folder)
    _fake_fmnist(folder, 1)     # same path, other images
    second = run_training(TrainConfig(**FM), data_root=folder, device="cpu", progress=False)
    assert second.dir.path != first.dir.path
    assert _snapshot(first.dir.path) == first_files
    env = json.loads(second.dir.file("env.json").read_text())
    assert env["data_fingerprint"] == data.fingerprint("fashion-mnist", root=folder)


# ======================================================================================

# Run identity
# ======================================================================================


def test_two_data_folders_give_two_runs_each_read_back_as_its_own(tmp_path, monkeypatch):
    a, b = _fake_fmnist(tmp_path / "a", 0), _fake_fmnist(tmp_path / "b", 1)
    run_a = run_training(TrainConfig(**FM), data_root=a, device="cpu", progress=False)
    run_b = run_training(TrainConfig(**FM), data_root=b, device="cpu", progress=False)
    assert run_a.dir.path != run_b.dir.path

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run must be read back, not retrained")

    monkeypatch.setattr(train, "_Trainer", no_training)
    assert run_training(TrainConfig(**FM), data_root=a, device="cpu", progress=False).dir.path == run_a.dir.path
    assert run_training(TrainConfig(**FM), data_root=b, device="cpu", progress=False).dir.path == run_b.dir.path
    # a copy of the same files elsewhere is the same data, so the same run
    shutil.copytree(a, tmp_path / "a_copy")
    assert train.run_dir_for(TrainConfig(**FM), data_root=tmp_path / "a_copy").path == run_a.dir.path


def test_fingerprint_follows_the_bytes_and_is_cached_per_file(tmp_path):
    folder = _fake_fmnist(tmp_path / "fm", 0)
    first = data.fingerprint("fashion-mnist", root=folder)
    cache = json.loads((tmp_path / "cache" / "data_md5.json").read_text())
    mine = sorted(Path(k.rsplit("|", 2)[0]).name for k in cache if k.startswith(str(folder.resolve())))
    assert mine == ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]  # what training reads
    assert data.fingerprint("fashion-mnist", root=folder) == first
    labels = folder / "train-labels-idx1-ubyte.gz"
    raw = gzip.decompress(labels.read_bytes())
    labels.write_bytes(gzip.compress(raw[:-1] + bytes([(raw[-1] + 1) % 10])))
    assert data.fingerprint("fashion-mnist", root=folder) != first
    assert data.fingerprint("synthetic") != data.fingerprint("synthetic-1x28x28-5classes")


def test_env_records_code_version_and_data_fingerprint(run_copy):
    env = json.loads(run_copy.dir.file("env.json").read_text())
    assert env["data_fingerprint"] == data.fingerprint("synthetic")
    assert env["code"]["rs_lib"] and len(env["code"].get("git_commit", "x" * 40)) == 40


def test_fingerprint_without_the_files_is_that_of_the_published_release(tmp_path, monkeypatch):
    """A machine without the data (a planner, a laptop rendering a copied store) computes the key
    of runs trained on files whose MD5s are the published ones; an explicit root never falls back."""
    import hashlib

    folder = _fake_fmnist(tmp_path / "fm", 0)
    published = [(name, hashlib.md5((folder / name).read_bytes()).hexdigest())
                 for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")]
    monkeypatch.setattr(data, "official_train_md5", lambda name: published)
    monkeypatch.setattr(data, "SYSTEM_DIRS", {})
    monkeypatch.setenv("RS_DATA", str(tmp_path / "nowhere"))
    assert data.fingerprint("fashion-mnist") == data.fingerprint("fashion-mnist", root=folder)
    (tmp_path / "empty").mkdir()
    with pytest.raises(data.DatasetNotFoundError):
        data.fingerprint("fashion-mnist", root=tmp_path / "empty")
    monkeypatch.setattr(data, "official_train_md5", lambda name: None)
    with pytest.raises(data.DatasetNotFoundError):
        data.fingerprint("fashion-mnist")
