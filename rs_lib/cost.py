"""Training cost of methods, measured so that a busy machine cannot fake it (DESIGN.md, Conventions).

Backward Smoothing's headline claim is a cost ratio (Table 2: TRADES-10 takes 482 minutes, Backward
Smoothing 164, a ratio of 2.94).  A ratio read from two training runs' wall times measures whatever
else the machine did meanwhile.  :func:`measure` instead trains a copy of the same initial model
with every method on the same batches, *interleaved* (iteration i of every method before iteration
i + 1 of any, so outside load falls on all methods alike), timed by the process's CPU clock on the
CPU with one thread (insensitive to other processes) or by the synchronised wall clock on CUDA,
and takes each method's *median* per-iteration time.

Beside each time stand its pass counts (stated by the method, checked with module hooks on one
untimed iteration) and the pass-count ideal ratio to ``standard``

    ideal = (F + w_in·B_in + w_w·B_w + w_dd·D) / (same for standard),

where B = B_in (input-gradient backwards inside the objective: attack steps) + B_w (weight
backwards of the loop's ``loss.backward()``), D counts double backwards (GradAlign), and the w are
the measured costs of each kind of pass relative to a forward on this model
(:func:`backward_weights`).  :func:`contradictions` names the methods whose measured ratio departs
from that ideal by more than a tolerance: such a time is not printed as a result.

Public names: `measure` (cost: (warmup + iters + 1) training iterations of every method, plus the
pass-weight probe), `Timing` (its clock settings), `Clock`, `paper_config`, `config_for`,
`train_iteration`, `measured_passes`, `backward_weights`, `ratio`, `contradictions`,
`PAPER_TRADES_OVER_BS`, `TOLERANCE`.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import pandas as pd
import torch
from torch import nn

from . import _validate as check
from . import data as data_mod
from . import methods, models
from .methods import StepContext

#: Backward Smoothing Table 2, training minutes on an RTX 2080 Ti: TRADES-10 / Backward Smoothing.
PAPER_TRADES_OVER_BS = 482 / 164

#: How far a measured ratio may depart from its pass-count ideal before the book says so.
TOLERANCE = 0.25


class Clock:
    """Process CPU time on the CPU with one torch thread, else wall time (CUDA synchronised)."""

    def __init__(self, device: torch.device, cpu_time: bool) -> None:
        self.device, self.cpu_time = device, cpu_time

    def now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.process_time() if self.cpu_time else time.perf_counter()

    @property
    def name(self) -> str:
        return "process CPU time" if self.cpu_time else "wall time"


def paper_config(name: str) -> Any:
    """The method's paper configuration with instrumentation off (when it has the flag)."""
    fields = {f.name for f in dataclasses.fields(methods.get_method(name).config_cls)}
    return methods.method_config(name, {"instrument": False} if "instrument" in fields else {})


def config_for(train_config: Any) -> tuple[str, Any]:
    """``(method, method config)`` of a training run's ``TrainConfig``, instrumentation off (the
    per-iteration loss-increment probes are not part of a method's cost)."""
    name = train_config.method
    params = dict(train_config.method_params)
    fields = {f.name for f in dataclasses.fields(methods.get_method(name).config_cls)}
    if "instrument" in fields:
        params["instrument"] = False
    return name, methods.method_config(name, params)


def train_iteration(model: nn.Module, opt: torch.optim.Optimizer, name: str, cfg: Any, x: torch.Tensor,
                    y: torch.Tensor, ctx: StepContext, scaler: torch.amp.GradScaler | None = None) -> None:
    """One training iteration as the loop does it: objective, weight backward, optimiser step; with
    ``scaler``, AMP (float16 autocast and loss scaling)."""
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


def measured_passes(model: nn.Module, name: str, cfg: Any, x: torch.Tensor, y: torch.Tensor,
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
    """(input-gradient backward, weight backward, double backward) time / forward time, train mode,
    the fastest of ``repeats`` each."""
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
        return max(min(times), 1e-9)

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


@contextlib.contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    saved = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


@dataclasses.dataclass(frozen=True)
class Timing:
    """How :func:`measure` times: ``iters`` timed iterations of ``batch_size`` after ``warmup`` untimed
    ones; ``threads`` torch CPU threads during the measurement (1: process CPU time, immune to other
    processes; None: leave as is, wall time); ``backward_weight``: one cost for every kind of
    backward pass (None: measured on the model); ``seed`` of the initial model and the methods' RNG."""

    batch_size: int = 128
    iters: int = 30
    warmup: int = 3
    threads: int | None = 1
    backward_weight: float | None = None
    seed: int = 0


def measure(configs: Mapping[str, tuple[str, Any]], *, model: str, dataset: str, device: str = "auto",
            timing: Timing = Timing()) -> pd.DataFrame:
    """Median time per training iteration of each method, interleaved in this process.

    ``configs`` maps a row label to ``(method name, method config)`` (e.g. from
    :func:`paper_config`); ``standard`` must be one of the methods (the ratios' unit).  Each method
    trains its own copy of one initial ``model`` on the first ``(warmup + iters) * batch_size``
    training images of ``dataset`` (`Timing`).

    One row per label: ``method_name`` (the registry's), ``forward``, ``backward`` (stated), ``backward_input``,
    ``backward_weights`` (hooks), ``double_backward``, ``hooks_agree``, ``s_per_iter`` (median),
    ``time / standard``, ``ideal / standard`` and ``measured / ideal``; ``frame.attrs`` holds the
    clock, the pass weights and the numbers of iterations.
    """
    if not isinstance(configs, Mapping) or not configs:
        raise ValueError(f"configs must be a non-empty mapping label -> (method, config), got {configs!r}")
    for label, entry in configs.items():
        if not (isinstance(entry, tuple) and len(entry) == 2 and entry[0] in methods.METHODS):
            raise ValueError(f"configs[{label!r}] must be (method name, config) with a method of "
                             f"{sorted(methods.METHODS)}, got {entry!r}")
    if "standard" not in [m for m, _ in configs.values()]:
        raise ValueError("configs: include a 'standard' method; ratios are relative to it")
    batch_size, iters, warmup, threads = timing.batch_size, timing.iters, timing.warmup, timing.threads
    backward_weight, seed = timing.backward_weight, timing.seed
    check.positive_int("batch_size", batch_size)
    check.positive_int("iters", iters)
    check.integer("warmup", warmup, low=0)
    if threads is not None:
        check.positive_int("threads", threads)
    dev = check.resolve_device("device", device)
    info = data_mod.dataset_info(dataset)
    with _torch_threads(threads if dev.type == "cpu" else None):
        clock = Clock(dev, cpu_time=dev.type == "cpu" and torch.get_num_threads() == 1)
        train = data_mod.load(dataset, "train", n=batch_size * (warmup + iters))
        batches = list(data_mod.batches(train, batch_size, device=dev))
        torch.manual_seed(seed)
        initial = models.build_model(model, in_channels=info.shape[0], num_classes=info.num_classes,
                                     mean=info.mean, std=info.std, image_size=tuple(info.shape[1:])).to(dev)
        x0, y0 = batches[0]
        weights = (backward_weights(initial, x0, y0, clock) if backward_weight is None
                   else (check.non_negative("backward_weight", backward_weight),) * 3)
        generator = torch.Generator(device=dev).manual_seed(seed)
        ctx = StepContext(epoch=0, iteration=0, progress=0.0, generator=generator, num_classes=info.num_classes)
        rows: dict[str, dict[str, Any]] = {}
        for label, (name, cfg) in configs.items():
            stated = methods.METHODS[name].passes(cfg)
            forward, b_in, b_w = measured_passes(initial, name, cfg, x0, y0, ctx)
            net = copy.deepcopy(initial).train()
            rows[label] = {"method_name": name, "cfg": cfg, "model": net, "times": [],
                           "opt": torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9),
                           "forward": stated.forward, "backward": stated.backward, "backward_input": b_in,
                           "backward_weights": b_w, "double_backward": stated.double_backward,
                           "hooks_agree": (forward, b_in + b_w) == (stated.forward, stated.backward)}
        for i, (x, y) in enumerate(batches):
            for r in rows.values():
                start = clock.now()
                train_iteration(r["model"], r["opt"], r["method_name"], r["cfg"], x, y, ctx)
                if i >= warmup:
                    r["times"].append(clock.now() - start)
    w_in, w_w, w_dd = weights
    frame = pd.DataFrame([{"label": label, **{k: v for k, v in r.items() if k not in ("cfg", "model", "opt", "times")},
                           "s_per_iter": statistics.median(r["times"])} for label, r in rows.items()])
    ideal = (frame["forward"] + w_in * frame["backward_input"] + w_w * frame["backward_weights"]
             + w_dd * frame["double_backward"])
    base = frame.index[frame["method_name"] == "standard"][0]
    frame["time / standard"] = frame["s_per_iter"] / frame.loc[base, "s_per_iter"]
    frame["ideal / standard"] = ideal / ideal[base]
    frame["measured / ideal"] = frame["time / standard"] / frame["ideal / standard"]
    frame.attrs.update(clock=clock.name, threads=torch.get_num_threads() if threads is None else threads,
                       weights={"input backward": w_in, "weight backward": w_w, "double backward": w_dd},
                       iters=iters, warmup=warmup, batch_size=batch_size, model=model, dataset=dataset)
    return frame


def ratio(frame: pd.DataFrame, a: str, b: str, column: str = "s_per_iter") -> float:
    """``column`` of row ``a`` over row ``b`` of a :func:`measure` frame (labels)."""
    rows = frame.set_index("label")[column]
    for name in (a, b):
        if name not in rows.index:
            raise ValueError(f"{name!r} is not a label of the cost table; it has {list(rows.index)}")
    return float(rows[a] / rows[b])


def contradictions(frame: pd.DataFrame, tolerance: float = TOLERANCE) -> list[str]:
    """Labels whose measured time ratio to ``standard`` departs from the pass-count ideal by more
    than ``tolerance`` (relative): their times say more about the machine than about the method."""
    check.positive("tolerance", tolerance)
    off = (frame["measured / ideal"] - 1.0).abs() > tolerance
    return list(frame.loc[off, "label"])
