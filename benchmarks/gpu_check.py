"""GPU check: the measurements the paper-scale sweep's cost table needs, in one JSON file.

On CIFAR-shaped data (3x32x32, 10 classes, generated):

* **training**: seconds per iteration of every Backward Smoothing chapter method (``standard`` and
  every objective of ``rs_lib.methods.adversarial``, paper hyperparameters) on ResNet-18 at batch
  128, fp32 and AMP (float16 autocast + loss scaling, as ``TrainConfig(amp=True)``); iterations are
  interleaved (iteration i of every row before iteration i + 1 of any), each timed with CUDA
  synchronisation, and a row's time is the median of its timed iterations;
* **certification**: samples/s of CERTIFY for ResNet-110 at n = 100,000 (n0 = 100) on a few inputs:
  ours (``Smooth.certify_batch``), a reference-style loop (Cohen et al.'s ``core.py`` semantics: one
  input at a time, a host copy and NumPy counting per batch; ``certify_throughput.reference_certify``)
  and the raw forward pass at the same batch, the median of ``--repeats`` round-robin runs;
* **peak GPU memory** of each training row's first iteration (activations, gradients, optimiser
  state: the peak above what was allocated before it) and of one certification.

Writes ``benchmarks/gpu_check.json`` (``--out``) in the format the sweep's cost table reads:
``{"device", "torch", "train": {"resnet18/<method>[/amp]": {"s_per_iter", "batch_size"}},
"certify": {"resnet110": {"samples_per_s", "batch_size", ...}}, "peak_memory_gib": {...}}``; a row
that fails is listed under ``"errors"`` instead of stopping the check.  Under 8 minutes on one H200:

    python benchmarks/gpu_check.py                       # on the GPU
    OMP_NUM_THREADS=1 python benchmarks/gpu_check.py --device cpu --quick   # -> $TMPDIR/gpu_check-quick.json

``--quick`` (a correctness run, e.g. on a CPU): batch 4, 2 timed iterations, n = 200 on one input.
AMP rows need CUDA and are skipped on a CPU.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling benchmarks

from certify_throughput import raw_forward, reference_certify, timed  # noqa: E402
from train_cost import chapter_methods, method_cfg, train_iteration  # noqa: E402

from rs_lib import _validate as check  # noqa: E402
from rs_lib import data as data_mod  # noqa: E402
from rs_lib import models  # noqa: E402
from rs_lib.methods import StepContext  # noqa: E402
from rs_lib.smoothing import Smooth  # noqa: E402

DATASET = "synthetic-3x32x32"
TRAIN_MODEL, CERTIFY_MODEL = "resnet18", "resnet110"
GIB = 2**30


def build(name: str, device: torch.device) -> torch.nn.Module:
    info = data_mod.dataset_info(DATASET)
    torch.manual_seed(0)
    return models.build_model(name, in_channels=3, num_classes=info.num_classes, mean=info.mean,
                              std=info.std).to(device)


def record_peak(out: dict, key: str, device: torch.device, fn: Callable[[], object]) -> None:
    """Run ``fn``; on a GPU, record as ``out["peak_memory_gib"][key]`` the peak memory it allocated
    above what was allocated before it (the other rows' models stay resident meanwhile)."""
    if device.type != "cuda":
        fn()
        return
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    out["peak_memory_gib"][key] = (torch.cuda.max_memory_allocated(device) - before) / GIB


def train_rows(args: argparse.Namespace, device: torch.device, out: dict) -> None:
    """Seconds per iteration of each (method, amp) row on ResNet-18, interleaved, median."""
    info = data_mod.dataset_info(DATASET)
    train = data_mod.load(DATASET, "train", n=args.batch_size * (args.warmup + args.iters))
    batches = list(data_mod.batches(train, args.batch_size, device=device))
    ctx = StepContext(epoch=0, iteration=0, progress=0.0, num_classes=info.num_classes,
                      generator=torch.Generator(device=device).manual_seed(0))
    initial = build(TRAIN_MODEL, device)
    rows: dict[str, dict] = {}
    for name in args.methods:
        for amp in ((False, True) if device.type == "cuda" else (False,)):
            key = f"{TRAIN_MODEL}/{name}" + ("/amp" if amp else "")
            model = build(TRAIN_MODEL, device)
            model.load_state_dict(initial.state_dict())
            rows[key] = {"name": name, "cfg": method_cfg(name), "model": model.train(), "times": [],
                         "opt": torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9),
                         "scaler": torch.amp.GradScaler("cuda") if amp else None}
    for i, (x, y) in enumerate(batches):
        for key, r in list(rows.items()):
            step = lambda r=r: train_iteration(r["model"], r["opt"], r["name"], r["cfg"], x, y, ctx,  # noqa: E731
                                               r["scaler"])
            try:
                if i == 0:
                    record_peak(out, f"train/{key}", device, step)
                elif i >= args.warmup:
                    r["times"].append(timed(step, device, time.perf_counter))
                else:
                    step()
            except Exception as error:  # one failing row must not lose the others
                out["errors"][f"train/{key}"] = "".join(traceback.format_exception_only(error)).strip()
                out["peak_memory_gib"].pop(f"train/{key}", None)
                del rows[key]
    for key, r in rows.items():
        out["train"][key] = {"s_per_iter": statistics.median(r["times"]), "batch_size": args.batch_size}
        print(f"{key:40s} {out['train'][key]['s_per_iter']:.4f} s/iter", flush=True)


def certify_rows(args: argparse.Namespace, device: torch.device, out: dict) -> None:
    """Samples/s of ours, the reference-style loop and the raw forward, ResNet-110, median of repeats."""
    model = build(CERTIFY_MODEL, device).eval()
    xs = torch.rand(args.num_inputs, 3, 32, 32, device=device)
    total, alpha, batch = args.num_inputs * (args.n0 + args.n), 0.001, args.cert_batch
    smooth = Smooth(model, 10, args.sigma)

    def reference() -> None:
        for x in xs:
            reference_certify(model, x, args.n0, args.n, alpha, args.sigma, batch, 10)

    ways = {"ours": lambda: smooth.certify_batch(xs, args.n0, args.n, alpha, batch),
            "reference_style": reference,
            "raw_forward": lambda: raw_forward(model, (3, 32, 32), total, batch, device, smooth.sampler.channels_last)}
    raw_forward(model, (3, 32, 32), 2 * batch, batch, device, smooth.sampler.channels_last)   # warm-up
    seconds: dict[str, list[float]] = {name: [] for name in ways}
    for repeat in range(args.repeats):
        for name, fn in ways.items():
            if repeat == 0 and name == "ours":
                start = time.perf_counter()
                record_peak(out, f"certify/{CERTIFY_MODEL}", device, fn)
                seconds[name].append(time.perf_counter() - start)
            else:
                seconds[name].append(timed(fn, device, time.perf_counter))
    rate = {name: total / statistics.median(s) for name, s in seconds.items()}
    out["certify"][CERTIFY_MODEL] = {"samples_per_s": rate["ours"], "batch_size": batch, "n": args.n,
                                     "n0": args.n0, "inputs": args.num_inputs,
                                     "reference_style_samples_per_s": rate["reference_style"],
                                     "raw_forward_samples_per_s": rate["raw_forward"]}
    for name, r in rate.items():
        print(f"certify {CERTIFY_MODEL} {name:16s} {r:12.0f} samples/s", flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--quick", action="store_true", help="a few iterations and samples (correctness run)")
    p.add_argument("--out", default=None, help="default: benchmarks/gpu_check.json (the sweep's cost "
                   "table); with --quick, gpu_check-quick.json in the temporary directory")
    p.add_argument("--methods", nargs="+", default=None, help="default: standard + every chapter method")
    p.add_argument("--batch-size", type=int, default=None, help="training batch (default 128; quick 4)")
    p.add_argument("--iters", type=int, default=None, help="timed iterations per row (default 10; quick 2)")
    p.add_argument("--warmup", type=int, default=None, help="untimed iterations first (default 3; quick 1)")
    p.add_argument("--n", type=int, default=None, help="certification samples per input (default 100,000)")
    p.add_argument("--n0", type=int, default=None, help="selection samples (default 100; quick 10)")
    p.add_argument("--num-inputs", type=int, default=None, help="certified inputs (default 2; quick 1)")
    p.add_argument("--cert-batch", type=int, default=None, help="certification batch (default 1000; quick 50)")
    p.add_argument("--repeats", type=int, default=None, help="certification repeats (default 3; quick 1)")
    p.add_argument("--sigma", type=float, default=0.25)
    args = p.parse_args(argv)
    defaults = dict(batch_size=4, iters=2, warmup=1, n=200, n0=10, num_inputs=1, cert_batch=50, repeats=1) \
        if args.quick else dict(batch_size=128, iters=10, warmup=3, n=100_000, n0=100, num_inputs=2,
                                cert_batch=1000, repeats=3)
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
        check.positive_int(f"--{name.replace('_', '-')}", getattr(args, name))
    check.positive("--sigma", args.sigma)
    if args.out is None:   # a quick run's numbers must not replace the cost table's
        args.out = str(Path(tempfile.gettempdir()) / "gpu_check-quick.json") if args.quick \
            else str(Path(__file__).resolve().parent / "gpu_check.json")
    args.methods = args.methods or chapter_methods()
    for name in args.methods:
        check.choice("--methods", name, chapter_methods())
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    device = check.resolve_device("--device", args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    start = time.perf_counter()
    out = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)",
           "torch": torch.__version__, "quick": args.quick, "dataset": DATASET,
           "train": {}, "certify": {}, "peak_memory_gib": {}, "errors": {}}
    train_rows(args, device, out)
    certify_rows(args, device, out)
    out["wall_s"] = time.perf_counter() - start
    Path(args.out).write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")
    print(f"wrote {args.out} ({out['wall_s']:.0f} s, {len(out['errors'])} failed rows)")
    return out


if __name__ == "__main__":
    main()
