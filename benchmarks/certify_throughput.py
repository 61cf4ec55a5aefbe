"""Throughput of CERTIFY: ours against the reference's loop, at equal terms and as shipped.

One run, one model, the same inputs and the same n for every row:

* ``ours``: ``rs_lib.smoothing.certify_dataset``'s engine (``Smooth.certify_batch``): noise on the
  model's device, broadcast input, packed batches, int64 counts on the device;
* ``reference``: Cohen et al.'s ``core.py`` loop re-written plainly: one input at a time,
  ``x.repeat`` per batch, ``randn_like``, ``.cpu().numpy()`` and Python counting per batch. *As
  shipped*: the plain model at the reference's batch (``--batch-size``, 1,000). *Equal terms*: the
  same loop given what ours uses, the model behind a channels-last input copy (`ChannelsLast`)
  and our batch (``--ours-batch-size``); both levers are open to the reference unchanged;
* ``raw forward``: the model alone on a preallocated batch in ``inference_mode`` (the limit), in
  the same memory format and at the same batch size as the row it bounds (every ratio printed
  compares rows at one batch size and one memory format, except the one marked "as shipped");
* with ``--compile``: ``ours compiled`` (``Smooth(..., compile=True)``) and the raw forward of the
  same ``torch.compile``d model; compilation happens in an untimed warm-up.

Rates are samples/s (n0 + n per input), best of ``--repeats`` round-robin runs, timed by the
process's CPU clock on one CPU thread (robust to other load) and by wall clock otherwise.

    OMP_NUM_THREADS=1 python benchmarks/certify_throughput.py --n 10000 --num-inputs 4 --threads 1
    python benchmarks/certify_throughput.py --n 20000 --num-inputs 4 --threads 2 --compile
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch
from statsmodels.stats.proportion import proportion_confint
from torch import nn

from rs_lib import _validate as check
from rs_lib.smoothing import Smooth


def lenet(num_classes: int = 10) -> nn.Module:
    """SmoothMix's MNIST LeNet: rs_lib.models.LeNet when present, else the same layers here."""
    try:
        from rs_lib.models import LeNet
        return LeNet(in_channels=1, num_classes=num_classes)
    except ImportError:
        return nn.Sequential(nn.Conv2d(1, 20, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(20, 50, 5),
                             nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(800, 500), nn.ReLU(),
                             nn.Linear(500, num_classes))


# ---- the reference's way (Cohen et al. core.py semantics, written plainly) ---------------------

class ChannelsLast(nn.Module):
    """``model`` fed a channels-last copy of its input: how the reference's loop, unchanged, gets
    the memory format that ours uses (for one channel, ``.contiguous(channels_last)`` is a no-op)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=torch.channels_last)
        return self.model(out.copy_(x))


def reference_counts(model: nn.Module, x: torch.Tensor, num: int, sigma: float, batch_size: int,
                     num_classes: int) -> np.ndarray:
    counts = np.zeros(num_classes, dtype=int)
    with torch.no_grad():
        remaining = num
        while remaining > 0:
            this_batch = min(batch_size, remaining)
            remaining -= this_batch
            batch = x.repeat((this_batch, 1, 1, 1))
            noise = torch.randn_like(batch) * sigma
            for label in model(batch + noise).argmax(1).cpu().numpy():
                counts[label] += 1
    return counts


def reference_certify(model: nn.Module, x: torch.Tensor, n0: int, n: int, alpha: float,
                      sigma: float, batch_size: int, num_classes: int) -> tuple[int, float]:
    from scipy.stats import norm
    model.eval()
    c_hat = reference_counts(model, x, n0, sigma, batch_size, num_classes).argmax()
    count = reference_counts(model, x, n, sigma, batch_size, num_classes)[c_hat]
    p_lower = proportion_confint(count, n, alpha=2 * alpha, method="beta")[0]
    return (-1, 0.0) if p_lower < 0.5 else (int(c_hat), sigma * norm.ppf(p_lower))


# ---- timing ---------------------------------------------------------------------------------

def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device, clock: Callable[[], float]) -> float:
    synchronize(device)
    start = clock()
    fn()
    synchronize(device)
    return clock() - start


def raw_forward(model: nn.Module, shape: tuple[int, ...], total: int, batch_size: int,
                device: torch.device, channels_last: bool, full_model: nn.Module | None = None) -> None:
    """``total`` samples through ``model`` in batches; ``full_model`` (e.g. compiled) takes the
    full batches and ``model`` the last partial one, as ``Smooth(compile=True)`` does."""
    # empty(memory_format=...) then fill: .contiguous(channels_last) is a no-op for one channel
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    batch = torch.empty((batch_size, *shape), device=device, memory_format=fmt)
    batch.copy_(torch.rand((batch_size, *shape), device=device))
    with torch.inference_mode():
        for start in range(0, total, batch_size):
            size = min(batch_size, total - start)
            (full_model if full_model is not None and size == batch_size else model)(batch[:size]).argmax(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=10_000, help="estimation samples per input")
    parser.add_argument("--n0", type=int, default=100, help="selection samples per input")
    parser.add_argument("--num-inputs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=1000,
                        help="batch of the reference-style loop and the raw forward (the reference's default)")
    parser.add_argument("--ours-batch-size", type=int, default=None,
                        help="batch of our certifier (default: --batch-size); on a CPU a cache-sized batch "
                             "such as 250 is faster, and the same choice is open to any loop: the table "
                             "reports the raw forward at this batch too")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--sigma", type=float, default=0.25)
    parser.add_argument("--repeats", type=int, default=3, help="round-robin repeats; best time kept")
    parser.add_argument("--clock", choices=["cpu", "wall"], default=None,
                        help="process CPU time (default on CPU with --threads 1) or wall time")
    parser.add_argument("--compile", action="store_true",
                        help="also time Smooth(compile=True) and the compiled model's raw forward")
    args = parser.parse_args()
    if args.ours_batch_size is None:
        args.ours_batch_size = args.batch_size
    for name in ("n", "n0", "num_inputs", "batch_size", "ours_batch_size", "threads", "repeats"):
        check.positive_int(f"--{name.replace('_', '-')}", getattr(args, name))
    check.positive("--sigma", args.sigma)
    device = check.resolve_device("--device", args.device)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    model = lenet().to(device).eval()
    xs = torch.rand(args.num_inputs, 1, 28, 28, device=device)
    total = args.num_inputs * (args.n0 + args.n)
    alpha, bs = 0.001, args.batch_size

    obs = args.ours_batch_size

    def ours(channels_last: bool, compile: bool = False) -> Callable[[], object]:
        smooth = Smooth(model, 10, args.sigma, channels_last=channels_last, compile=compile)
        return lambda: smooth.certify_batch(xs, args.n0, args.n, alpha, obs)

    def reference(net: nn.Module, batch: int) -> Callable[[], None]:
        def run() -> None:
            for x in xs:
                reference_certify(net, x, args.n0, args.n, alpha, args.sigma, batch, 10)
        return run

    # warm-up: allocator, oneDNN/cuDNN kernel choice
    raw_forward(model, (1, 28, 28), 2 * bs, bs, device, False)
    raw_forward(model, (1, 28, 28), 2 * bs, bs, device, True)

    methods = {
        "raw forward, our batch": lambda: raw_forward(model, (1, 28, 28), total, obs, device, False),
        "raw forward cl, our batch": lambda: raw_forward(model, (1, 28, 28), total, obs, device, True),
        "reference as shipped": reference(model, bs),
        "reference, our batch": reference(model, obs),
        "reference cl, our batch": reference(ChannelsLast(model).eval(), obs),
        "ours": ours(False),
        "ours channels_last": ours(True),
    }
    if args.compile:
        compiled = torch.compile(model, dynamic=False)
        methods["raw compiled cl, our batch"] = lambda: raw_forward(model, (1, 28, 28), total, obs, device, True,
                                                                    full_model=compiled)
        methods["ours compiled channels_last"] = ours(True, compile=True)
        start = time.perf_counter()
        for name in ("raw compiled cl, our batch", "ours compiled channels_last"):
            methods[name]()   # compiles (untimed)
        print(f"torch.compile warm-up (both compiled rows): {time.perf_counter() - start:.1f} s wall")
    # Round-robin repeats, best time per method: other processes on a shared machine slow whole
    # stretches of a run, and the minimum is the least disturbed measurement.
    # On one CPU thread the process's CPU time is the measure that other processes' load does not
    # inflate; on a GPU or with several threads (OpenMP spin-waits count as CPU time) wall time.
    clock_name = args.clock or ("cpu" if device.type == "cpu" and args.threads == 1 else "wall")
    clock = time.process_time if clock_name == "cpu" else time.perf_counter
    rows = {name: float("inf") for name in methods}
    for _ in range(args.repeats):
        for name, fn in methods.items():
            rows[name] = min(rows[name], timed(fn, device, clock))
    rate = {name: total / seconds for name, seconds in rows.items()}
    print(f"LeNet 1x28x28 on {device}, {torch.get_num_threads()} thread(s), {args.num_inputs} inputs, "
          f"n0={args.n0}, n={args.n}, batch {bs} (ours: {obs}): {total} samples per row, "
          f"best of {args.repeats}, {clock_name} clock")
    print(f"{'method':28s} {clock_name + ' s':>9s} {'samples/s':>11s}")
    for name, seconds in rows.items():
        print(f"{name:28s} {seconds:9.3f} {rate[name]:11.0f}")
    print(f"equal terms, batch {obs}, contiguous:     ours / reference     "
          f"{rate['ours'] / rate['reference, our batch']:.2f}x")
    print(f"equal terms, batch {obs}, channels_last:  ours / reference     "
          f"{rate['ours channels_last'] / rate['reference cl, our batch']:.2f}x")
    print(f"as shipped: ours channels_last (batch {obs}) / reference (contiguous, batch {bs}) "
          f"{rate['ours channels_last'] / rate['reference as shipped']:.2f}x")
    print(f"ours / raw forward, both batch {obs}, contiguous           "
          f"{rate['ours'] / rate['raw forward, our batch']:.1%}")
    print(f"ours channels_last / raw cl forward, both batch {obs}      "
          f"{rate['ours channels_last'] / rate['raw forward cl, our batch']:.1%}")
    if args.compile:
        print(f"ours compiled / reference cl (both batch {obs})  "
              f"{rate['ours compiled channels_last'] / rate['reference cl, our batch']:.2f}x")
        print(f"ours compiled / raw compiled at its batch "
              f"{rate['ours compiled channels_last'] / rate['raw compiled cl, our batch']:.1%}")


if __name__ == "__main__":
    main()
