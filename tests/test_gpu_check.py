"""benchmarks/gpu_check.py runs end to end on a CPU (``--device cpu --quick``) and writes the JSON
format the sweep's cost table reads; a failing row is reported, not fatal."""

import importlib.util
import json
import math
from pathlib import Path

import pytest

from rs_lib import costs, methods

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


QUICK = ["--device", "cpu", "--quick", "--iters", "1", "--n", "40", "--n0", "5", "--cert-batch", "20"]


def test_gpu_check_quick_on_cpu_writes_the_cost_table_format(gpu_check, tmp_path):
    out = tmp_path / "gpu_check.json"
    result = gpu_check.main([*QUICK, "--out", str(out), "--methods", "standard", "backward_smoothing"])
    written = json.loads(out.read_text())
    assert written == json.loads(json.dumps(result))
    assert isinstance(written["device"], str) and written["torch"] and written["quick"] is True
    assert set(written["train"]) == {"resnet18/standard", "resnet18/backward_smoothing"}   # no AMP on a CPU
    for row in written["train"].values():
        assert row["batch_size"] == 4 and 0 < row["s_per_iter"] < math.inf
    cert = written["certify"]["resnet110"]
    assert cert["n"] == 40 and cert["batch_size"] == 20
    for key in ("samples_per_s", "reference_style_samples_per_s", "raw_forward_samples_per_s"):
        assert cert[key] > 0
    assert written["errors"] == {} and written["peak_memory_gib"] == {}   # no GPU memory on a CPU
    table = costs.load_table(out)                                          # the sweep's cost table reads it
    assert table.train_s_per_iter["resnet18/standard"] == written["train"]["resnet18/standard"]["s_per_iter"]
    assert table.certify_samples_per_s["resnet110"] == cert["samples_per_s"]


def test_a_quick_run_never_writes_the_cost_table_file(gpu_check):
    assert gpu_check.parse_args(["--quick"]).out != str(gpu_check.Path(gpu_check.__file__).parent / "gpu_check.json")
    assert gpu_check.parse_args([]).out.endswith("benchmarks/gpu_check.json")


def test_gpu_check_reports_a_failing_row_and_keeps_the_others(gpu_check, tmp_path, monkeypatch):
    original = methods.METHODS["fast_at"]

    def broken(model, x, y, cfg, ctx):
        raise RuntimeError("dtype mismatch in the attack")

    broken.__module__ = original.objective.__module__   # still one of the chapter's methods

    monkeypatch.setitem(methods.METHODS, "fast_at", original.__class__(
        original.name, original.config_cls, broken, original.passes, original.summary))
    result = gpu_check.main([*QUICK, "--out", str(tmp_path / "g.json"), "--methods", "standard", "fast_at"])
    assert "dtype mismatch" in result["errors"]["train/resnet18/fast_at"]
    assert list(result["train"]) == ["resnet18/standard"]


def test_gpu_check_rejects_an_unknown_method(gpu_check):
    with pytest.raises(ValueError, match="--methods"):
        gpu_check.parse_args(["--methods", "nope"])
