"""Command line: ``python -m rs_lib {train,data,book,list} ...``.

Every subcommand validates its arguments before any heavy work and exits with status 2 and a
one-line message naming the bad argument.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

EPILOG = """examples:
  python -m rs_lib list                                   # methods, datasets, models
  python -m rs_lib train --method gaussian --param sigma=0.5 --dataset fashion-mnist --model lenet --epochs 5
  python -m rs_lib data --download fashion-mnist          # fetch a dataset (needs network)
  python -m rs_lib book --profile cpu                     # execute every notebook, build the site
results land in results/<experiment>/<config hash>/ (or $RS_RESULTS); a finished run is reused."""


def _value(text: str) -> Any:
    """Parse ``text`` as JSON (numbers, true/false, lists) and fall back to the plain string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _pairs(items: Sequence[str] | None, flag: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{flag} expects KEY=VALUE, got {item!r}")
        out[key] = _value(value)
    return out


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train one model into the run store",
                       description="Train one model with one method into results/<experiment>/<hash>/. "
                                   "Unspecified settings take TrainConfig's defaults; see `list` for names.")
    p.add_argument("--experiment", default="adhoc", help="store folder name (default: adhoc)")
    p.add_argument("--method", default="standard", help="training objective (see `list`)")
    p.add_argument("--param", action="append", metavar="KEY=VALUE",
                   help="method hyperparameter, repeatable (e.g. --param sigma=0.5)")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--model", default="small_cnn")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--n-train", type=int, default=None, help="first N training images (default: all)")
    p.add_argument("--n-val", type=int, default=1000, help="validation subset size for per-epoch metrics")
    p.add_argument("--optimizer", default="sgd", help="sgd or adam")
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--nesterov", action="store_true")
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--schedule", default="piecewise", help="constant, piecewise, cyclic or cosine")
    p.add_argument("--milestones", type=float, nargs="+", default=[0.5, 0.75],
                   help="piecewise: fractions of training where the lr is multiplied by --lr-decay")
    p.add_argument("--lr-decay", type=float, default=0.1)
    p.add_argument("--warmup-epochs", type=float, default=0.0, help="hyperparameter (eps) warm-up length")
    p.add_argument("--no-augment", action="store_true", help="disable the dataset's augmentation")
    p.add_argument("--amp", action="store_true", help="mixed precision (CUDA only)")
    p.add_argument("--val-metrics", nargs="+", default=["clean"], help="per-epoch validation metrics")
    p.add_argument("--eval-param", action="append", metavar="KEY=VALUE", help="validation metric parameter")
    p.add_argument("--select-on", default="clean", help="validation metric that picks the best epoch")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--data-root", default=None, help="directory with the datasets (default: $RS_DATA or data/)")
    p.add_argument("--results", default=None, help="run store root (default: $RS_RESULTS or results/)")
    p.add_argument("--no-progress", action="store_true")


def _train(args: argparse.Namespace) -> int:
    from .train import TrainConfig, run_training

    cfg = TrainConfig(method=args.method, method_params=_pairs(args.param, "--param"), dataset=args.dataset,
                      model=args.model, epochs=args.epochs, batch_size=args.batch_size, n_train=args.n_train,
                      n_val=args.n_val, optimizer=args.optimizer, lr=args.lr, momentum=args.momentum,
                      nesterov=args.nesterov, weight_decay=args.weight_decay, schedule=args.schedule,
                      milestones=tuple(args.milestones), lr_decay=args.lr_decay, warmup_epochs=args.warmup_epochs,
                      augment=not args.no_augment, amp=args.amp, val_metrics=tuple(args.val_metrics),
                      eval_params=_pairs(args.eval_param, "--eval-param"), select_on=args.select_on, seed=args.seed)
    run = run_training(cfg, experiment=args.experiment, root=args.results, data_root=args.data_root,
                       device=args.device, threads=args.threads, progress=not args.no_progress)
    summary = run.summary
    print(f"run: {run.dir.path}")
    print(f"best epoch {summary['best_epoch'] + 1}: " + ", ".join(f"{k} {v:.4f}" for k, v in summary["best"].items()))
    print(f"training time {summary['train_time_total']:.1f}s over {summary['epochs']} epochs")
    return 0


def _add_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="check or download a dataset",
                       description="Without --download: report where each dataset was found. With --download NAME: "
                                   "fetch NAME through torchvision (needs network) into --root.")
    p.add_argument("--download", metavar="NAME", default=None)
    p.add_argument("--root", default=None, help="data directory (default: $RS_DATA or data/)")


def _data(args: argparse.Namespace) -> int:
    from . import data

    if args.download is not None:
        path = data.download(args.download, root=args.root)
        print(f"{args.download}: ready in {path}")
        return 0
    for name in data.DATASETS:
        if name == "synthetic":
            continue
        try:
            where = data.locate(name, root=args.root)
            print(f"{name:14s} found: {where}")
        except FileNotFoundError as err:
            print(f"{name:14s} missing ({str(err).splitlines()[0]})")
    return 0


def _add_book(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("book", help="execute the notebooks with papermill and build the Jupyter Book",
                       description="Execute every notebook of the book in PROFILE (finished runs are read from the "
                                   "store) and build the site into _build/html/index.html.")
    p.add_argument("--profile", default="cpu", help="smoke, cpu or paper")
    p.add_argument("--device", default="auto")
    p.add_argument("--notebooks", nargs="+", default=None, help="only these notebooks (names without .ipynb)")
    p.add_argument("--no-build", action="store_true", help="execute the notebooks only")


def _book(args: argparse.Namespace) -> int:
    from . import _validate as check
    from .book import build_book
    from .profiles import PROFILES

    check.choice("--profile", args.profile, PROFILES)
    build_book(profile=args.profile, device=args.device, notebooks=args.notebooks, build=not args.no_build)
    return 0


def _list(args: argparse.Namespace) -> int:
    from . import data, methods, models, profiles

    print("methods:")
    for name, m in sorted(methods.METHODS.items()):
        print(f"  {name:24s} {m.summary}")
    print("datasets: " + ", ".join(data.DATASETS))
    print("models:   " + ", ".join(models.MODELS))
    print("experiments (profiles smoke/cpu/paper): " + ", ".join(sorted(profiles.PRESETS)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m rs_lib", epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     description="rs_lib: robust training, attacks and randomized-smoothing "
                                                 "certification behind the reproducibility book.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{train,data,book,list}")
    _add_train(sub)
    _add_data(sub)
    _add_book(sub)
    sub.add_parser("list", help="list methods, datasets, models and experiments")
    return parser


COMMANDS = {"train": _train, "data": _data, "book": _book, "list": _list}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
