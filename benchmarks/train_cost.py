"""Training cost of every Backward Smoothing chapter method relative to ``standard``, in one run.

Every method trains a copy of the same initial model on the same batches (default: wong_mnist, the
model of the chapter's cpu profile, on the first Fashion-MNIST images, batch 128, the methods' paper
hyperparameters, instrumentation off):
``--warmup`` untimed iterations, then ``--iters`` timed ones (objective, weight backward, SGD step,
as the training loop does), interleaved: iteration i of every method runs before iteration i + 1 of
any, so that load from other processes falls on all methods alike; a method's time is the median of
its per-iteration times. Printed per method: its forward/backward passes per iteration (stated by the method
and checked here with module hooks on one untimed iteration), seconds per iteration, the ratio to
``standard`` and the pass-count ideal ratio

    ideal = (F + w_in·B_in + w_w·B_w + w_dd·D) / (same for standard),

where the hooks split the B backward passes into B_in input-gradient backwards (inside the
objective: attack steps) and B_w weight backwards (the loop's ``loss.backward()``, one per training
forward), and the costs of a pass relative to a forward are measured on the model (``--backward-weight
measured``: w_in from a forward + input-gradient backward, w_w from a forward + weight backward, the
fastest of 5 each; on this project's CPU w_in ≈ 3.4, w_w ≈ 2.5 for wong_mnist,
and w_in ≈ 1.1, w_w ≈ 1.5 for small_cnn) or given as one number for
all (e.g. 2, the usual rule of thumb "a backward costs two forwards"). D is the method's stated number
of double backwards (``Passes.double_backward``: GradAlign's back-propagation through the graph of
an input gradient taken with ``create_graph``, which no module hook sees); its weight w_dd is
measured as the time of forward + create_graph input gradient + backward of that gradient, minus
forward, input backward and weight backward. Also TRADES-10 / BS (the paper's Table 2: 482 / 164 = 2.94).

Timing: the process's CPU clock when the device is the CPU with one thread (insensitive to other
load on the machine), else wall clock with CUDA synchronisation.

    OMP_NUM_THREADS=1 python benchmarks/train_cost.py --threads 1 --iters 30
    OMP_NUM_THREADS=1 python benchmarks/train_cost.py --threads 1 --iters 30 --model small_cnn
    python benchmarks/train_cost.py --device cuda --model preact_resnet18 --dataset synthetic-3x32x32
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from rs_lib import _validate as check
from rs_lib import data as data_mod
from rs_lib import methods, models
from rs_lib.methods import StepContext, adversarial

PAPER_TRADES_OVER_BS = 482 / 164  # BS paper Table 2, minutes


def chapter_methods() -> list[str]:
    """``standard`` and every objective registered by rs_lib.methods.adversarial."""
    own = sorted(n for n, m in methods.METHODS.items() if m.objective.__module__ == adversarial.__name__)
    return ["standard", *own]


def method_cfg(name: str):
    """The method's paper configuration with instrumentation off (when it has the flag)."""
    fields = {f.name for f in dataclasses.fields(methods.get_method(name).config_cls)}
    return methods.method_config(name, {"instrument": False} if "instrument" in fields else {})


class Clock:
    def __init__(self, device: torch.device, cpu_time: bool) -> None:
        self.device, self.cpu_time = device, cpu_time

    def now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.process_time() if self.cpu_time else time.perf_counter()


def train_iteration(model: nn.Module, opt: torch.optim.Optimizer, name: str, cfg, x: torch.Tensor,
                    y: torch.Tensor, ctx: StepContext, scaler: torch.amp.GradScaler | None = None) -> None:
    """One step as the training loop takes it; with ``scaler``, AMP (float16 autocast + loss scaling)."""
    with torch.autocast(device_type=x.device.type, dtype=torch.float16, enabled=scaler is not None):
        out = methods.METHODS[name].objective(model, x, y, cfg, ctx)
    opt.zero_grad(set_to_none=True)
    if scaler is None:
        out.loss.backward()
        opt.step()
        return
    scaler.scale(out.loss).backward()
    scaler.step(opt)
    scaler.update()


def measured_passes(model: nn.Module, name: str, cfg, x: torch.Tensor, y: torch.Tensor,
                    ctx: StepContext) -> tuple[float, float, float]:
    """(forwards, input-gradient backwards, weight backwards) of one iteration in batch-equivalents,
    counted with module hooks (backwards inside the objective / inside ``loss.backward()``)."""
    model = copy.deepcopy(model)
    count = {"f": 0.0, "b": 0.0}
    n = len(x)
    model.register_forward_hook(lambda m, inp, out: count.__setitem__("f", count["f"] + inp[0].shape[0] / n))
    model.register_full_backward_pre_hook(lambda m, g: count.__setitem__("b", count["b"] + g[0].shape[0] / n))
    out = methods.METHODS[name].objective(model, x, y, cfg, ctx)
    inside = count["b"]
    out.loss.backward()
    return count["f"], inside, count["b"] - inside


def backward_weights(model: nn.Module, x: torch.Tensor, y: torch.Tensor, clock: Clock,
                     repeats: int = 5) -> tuple[float, float, float]:
    """(input-gradient backward, weight backward, double backward) time / forward time, train mode."""
    model = copy.deepcopy(model).train()
    loss_fn = nn.CrossEntropyLoss()

    def input_backward() -> None:
        z = x.clone().requires_grad_(True)
        torch.autograd.grad(loss_fn(model(z), y), z)

    def fastest(fn: Callable[[], None]) -> float:
        fn()
        times = []
        for _ in range(repeats):
            start = clock.now()
            fn()
            times.append(clock.now() - start)
        return min(times)

    def double_backward() -> None:
        z = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(loss_fn(model(z), y), z, create_graph=True)
        g.pow(2).sum().backward()

    forward = fastest(lambda: loss_fn(model(x), y))
    with_input = fastest(input_backward)
    with_weights = fastest(lambda: loss_fn(model(x), y).backward())
    with_double = fastest(double_backward)
    w_in, w_w = max(with_input - forward, 0.0) / forward, max(with_weights - forward, 0.0) / forward
    return w_in, w_w, max(with_double / forward - 1.0 - w_in - w_w, 0.0)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="wong_mnist", help="default: the chapter's cpu-profile model")
    p.add_argument("--dataset", default="fashion-mnist", help="any rs_lib dataset, e.g. synthetic-3x32x32")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--iters", type=int, default=30, help="timed iterations per method and round")
    p.add_argument("--warmup", type=int, default=3, help="untimed iterations first")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--device", default="auto")
    p.add_argument("--methods", nargs="+", default=None, help="default: standard + every chapter method")
    p.add_argument("--backward-weight", default="measured",
                   help="'measured' or one number for every kind of backward (e.g. 2)")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    for name in ("batch_size", "iters"):
        check.positive_int(f"--{name.replace('_', '-')}", getattr(args, name))
    check.integer("--warmup", args.warmup, low=0)
    device = check.resolve_device("--device", args.device)
    names = args.methods or chapter_methods()
    for name in names:
        check.choice("--methods", name, sorted(methods.METHODS))
    if "standard" not in names:
        names = ["standard", *names]
    if args.threads is not None:
        torch.set_num_threads(check.positive_int("--threads", args.threads))
    weights = None if args.backward_weight == "measured" else \
        (check.non_negative("--backward-weight", float(args.backward_weight)),) * 3
    clock = Clock(device, cpu_time=device.type == "cpu" and torch.get_num_threads() == 1)

    info = data_mod.dataset_info(args.dataset)
    total = args.batch_size * (args.warmup + args.iters)
    train = data_mod.load(args.dataset, "train", n=total)
    batches = list(data_mod.batches(train, args.batch_size, device=device))
    torch.manual_seed(0)
    initial = models.build_model(args.model, in_channels=info.shape[0], num_classes=info.num_classes,
                                 mean=info.mean, std=info.std, image_size=tuple(info.shape[1:])).to(device)
    x0, y0 = batches[0]
    if weights is None:
        weights = backward_weights(initial, x0, y0, clock)
    w_in, w_w, w_dd = weights
    generator = torch.Generator(device=device).manual_seed(0)
    ctx = StepContext(epoch=0, iteration=0, progress=0.0, generator=generator, num_classes=info.num_classes)

    rows = {}
    for name in names:
        cfg = method_cfg(name)
        stated = methods.METHODS[name].passes(cfg)
        forward, b_in, b_w = measured_passes(initial, name, cfg, x0, y0, ctx)
        rows[name] = {"cfg": cfg, "F": stated.forward, "B": stated.backward, "B_in": b_in, "B_w": b_w,
                      "D": stated.double_backward,
                      "times": [], "hooks_agree": (forward, b_in + b_w) == (stated.forward, stated.backward)}
        rows[name]["model"] = copy.deepcopy(initial).train()
        rows[name]["opt"] = torch.optim.SGD(rows[name]["model"].parameters(), lr=0.01, momentum=0.9)
    for i, (x, y) in enumerate(batches):
        for name, r in rows.items():
            start = clock.now()
            train_iteration(r["model"], r["opt"], name, r["cfg"], x, y, ctx)
            if i >= args.warmup:
                r["times"].append(clock.now() - start)
    for r in rows.values():
        r["seconds"] = statistics.median(r["times"])

    base = rows["standard"]
    cost = lambda r: r["F"] + w_in * r["B_in"] + w_w * r["B_w"] + w_dd * r["D"]  # noqa: E731
    print(f"model {args.model}, {args.dataset}, batch {args.batch_size}, {args.iters} timed iterations after "
          f"{args.warmup} (interleaved, median), device {device}, threads {torch.get_num_threads()}, "
          f"{'process CPU time' if clock.cpu_time else 'wall time'}; pass cost: forward 1, input backward {w_in:.2f}, "
          f"weight backward {w_w:.2f}, double backward {w_dd:.2f}"
          f"{' (measured)' if args.backward_weight == 'measured' else ''}")
    print(f"{'method':24s} {'F':>4s} {'B':>4s} {'(in+w)':>7s} {'D':>3s} {'s/iter':>8s} {'ratio':>7s} {'ideal':>7s} "
          f"{'ratio/ideal':>11s}  hooks")
    for name, r in rows.items():
        ratio = r["seconds"] / base["seconds"]
        ideal = cost(r) / cost(base)
        r.update(ratio=ratio, ideal=ideal)
        split = f"{r['B_in']:g}+{r['B_w']:g}"
        print(f"{name:24s} {r['F']:4g} {r['B']:4g} {split:>7s} {r['D']:3g} {r['seconds']:8.4f} {ratio:7.2f} {ideal:7.2f} "
              f"{ratio / ideal:11.2f}  {'ok' if r['hooks_agree'] else 'DIFFER'}")
    if {"trades", "backward_smoothing"} <= rows.keys():
        measured = rows["trades"]["seconds"] / rows["backward_smoothing"]["seconds"]
        ideal = rows["trades"]["ideal"] / rows["backward_smoothing"]["ideal"]
        print(f"TRADES-10 / BS: measured {measured:.2f}, pass-count ideal {ideal:.2f}, "
              f"paper Table 2 {PAPER_TRADES_OVER_BS:.2f}")


if __name__ == "__main__":
    main()
