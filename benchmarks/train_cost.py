"""Training cost of every Backward Smoothing chapter method relative to ``standard``, in one run.

The measurement is :func:`rs_lib.cost.measure`, the same code that gives Table 2's time column of
the book (notebooks/bs_comparison.ipynb); this script prints it for any model, dataset and device.

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

from rs_lib import _validate as check
from rs_lib import cost, methods
from rs_lib.cost import paper_config as method_cfg  # noqa: F401 - benchmarks/gpu_check.py imports these here
from rs_lib.cost import train_iteration  # noqa: F401
from rs_lib.methods import adversarial


def chapter_methods() -> list[str]:
    """``standard`` and every objective registered by rs_lib.methods.adversarial."""
    own = sorted(n for n, m in methods.METHODS.items() if m.objective.__module__ == adversarial.__name__)
    return ["standard", *own]


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
    names = args.methods or chapter_methods()
    for name in names:
        check.choice("--methods", name, sorted(methods.METHODS))
    if "standard" not in names:
        names = ["standard", *names]
    weight = None if args.backward_weight == "measured" else float(args.backward_weight)
    timing = cost.Timing(batch_size=args.batch_size, iters=args.iters, warmup=args.warmup, threads=args.threads,
                         backward_weight=weight)
    table = cost.measure({n: (n, cost.paper_config(n)) for n in names}, model=args.model, dataset=args.dataset,
                         device=args.device, timing=timing)
    w = table.attrs["weights"]
    print(f"model {args.model}, {args.dataset}, batch {args.batch_size}, {args.iters} timed iterations after "
          f"{args.warmup} (interleaved, median), device {args.device}, threads {table.attrs['threads']}, "
          f"{table.attrs['clock']}; pass cost: forward 1, input backward {w['input backward']:.2f}, "
          f"weight backward {w['weight backward']:.2f}, double backward {w['double backward']:.2f}"
          f"{' (measured)' if weight is None else ''}")
    print(f"{'method':24s} {'F':>4s} {'B':>4s} {'(in+w)':>7s} {'D':>3s} {'s/iter':>8s} {'ratio':>7s} {'ideal':>7s} "
          f"{'ratio/ideal':>11s}  hooks")
    for _, r in table.iterrows():
        split = f"{r['backward_input']:g}+{r['backward_weights']:g}"
        print(f"{r['label']:24s} {r['forward']:4g} {r['backward']:4g} {split:>7s} {r['double_backward']:3g} "
              f"{r['s_per_iter']:8.4f} {r['time / standard']:7.2f} {r['ideal / standard']:7.2f} "
              f"{r['measured / ideal']:11.2f}  {'ok' if r['hooks_agree'] else 'DIFFER'}")
    if {"trades", "backward_smoothing"} <= set(table["label"]):
        print(f"TRADES-10 / BS: measured {cost.ratio(table, 'trades', 'backward_smoothing'):.2f}, pass-count ideal "
              f"{cost.ratio(table, 'trades', 'backward_smoothing', 'ideal / standard'):.2f}, "
              f"paper Table 2 {cost.PAPER_TRADES_OVER_BS:.2f}")


if __name__ == "__main__":
    main()
