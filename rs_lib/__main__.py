"""Command line: ``python -m rs_lib {train,certify,evaluate,data,book,sweep,list,discard} ...``.

Every subcommand validates its arguments before any heavy work.  One error path (:func:`main`):
a user-caused failure (bad argument, missing / unreadable / corrupt / wrong-format file, unwritable
path, damaged store entry) prints ``error: <what>, <where>, <how to fix>`` and exits with status
2, without a traceback; a traceback means a bug, or was asked for with ``--debug``.
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
  python -m rs_lib certify --run results/adhoc/<hash> --n 10000 --stop 500 --out cert.tsv
                                                          # CERTIFY the run's last model (sigma: the run's)
  python -m rs_lib evaluate --run results/adhoc/<hash> --protocol clean pgd20_bs autoattack_fast
                                                          # robust accuracy table (eps: the run's)
  python -m rs_lib data --download fashion-mnist          # fetch a dataset (needs network)
  python -m rs_lib book --profile cpu                     # execute every notebook, build the site
  python -m rs_lib book --profile paper --device cuda --notebooks noise_training --param epochs=10 --no-build
                                                          # one chapter, a knob overridden (names checked)
  python -m rs_lib sweep --all --profile paper --dry-run  # every paper job, GPU-hours per chapter
  python -m rs_lib sweep bs_comparison --profile paper --gpus 0,1,2,3   # one job per GPU
  python -m rs_lib discard results/adhoc/<hash>           # set a damaged run aside (it is recomputed)
results land in results/<experiment>/<key>/ (or $RS_RESULTS); a finished, verified run is reused.
Add --debug anywhere to see the traceback of an error."""


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
        if key in out:
            raise ValueError(f"{flag} {key}= is given twice ({key}={out[key]!r} and {item!r}); give each key once")
        out[key] = _value(value)
    return out


#: Spellings of TrainConfig fields whose flag is not just the field's name (kept working as aliases).
TRAIN_FLAGS: dict[str, tuple[str, ...]] = {"method_params": ("--param", "--method-param"),
                                           "eval_params": ("--eval-param",)}


def _field_flags(name: str) -> list[str]:
    """The flags of TrainConfig field ``name``: its former spellings first, then ``--<name>``."""
    canonical = "--" + name.replace("_", "-")
    return [*(f for f in TRAIN_FLAGS.get(name, ()) if f != canonical), canonical]


def _add_field(p: argparse.ArgumentParser, f: Any, kind: Any) -> None:
    """One flag per TrainConfig field, its type from the annotation, its help and default from the
    field; no argparse default, so a field left out takes TrainConfig's own."""
    import dataclasses
    import types
    import typing

    from .train import HELP

    default = f.default_factory() if f.default is dataclasses.MISSING else f.default
    shown = ", ".join(map(str, default)) if isinstance(default, tuple) else default
    text = f.metadata.get(HELP, "")
    if default is not None:   # a None default: the help says what it means
        text += f" (default: {shown if shown not in ((), '', {}) else 'none'})"
    base = dict(dest=f.name, default=argparse.SUPPRESS, help=text.replace("%", "%%"))
    flags = _field_flags(f.name)
    if typing.get_origin(kind) in (typing.Union, types.UnionType):   # X | None: a flag of type X
        kind = next(a for a in typing.get_args(kind) if a is not type(None))
    origin = typing.get_origin(kind)
    if kind is bool:
        p.add_argument(*flags, action=argparse.BooleanOptionalAction, **base)
    elif origin is tuple:
        p.add_argument(*flags, nargs="+", type=typing.get_args(kind)[0], metavar=f.name.upper(), **base)
    elif origin is not None:   # Mapping[str, Any]: repeatable KEY=VALUE pairs
        p.add_argument(*flags, action="append", metavar="KEY=VALUE", **{**base, "help": text + "; repeatable"})
    else:
        p.add_argument(*flags, type=kind, **base)


def _add_train(sub: argparse._SubParsersAction) -> None:
    import dataclasses
    import typing

    from .train import TrainConfig

    p = sub.add_parser("train", help="train one model into the run store",
                       description="Train one model with one method into results/<experiment>/<hash>/. "
                                   "One flag per TrainConfig field; a field left out takes TrainConfig's "
                                   "default. See `list` for the names of methods, datasets and models.")
    p.add_argument("--experiment", default="adhoc", help="store folder name (default: adhoc)")
    config = p.add_argument_group("training configuration (TrainConfig: what the run's key is the hash of)")
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        _add_field(config, f, hints[f.name])
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--data-root", default=None, help="directory with the datasets (default: $RS_DATA or data/)")
    p.add_argument("--results", default=None, help="run store root (default: $RS_RESULTS or results/)")
    p.add_argument("--no-progress", action="store_true")


def _train_config(args: argparse.Namespace) -> Any:
    """The TrainConfig of the flags given (the others: TrainConfig's defaults)."""
    import dataclasses

    from .train import TrainConfig

    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(args, f.name)}
    for name in TRAIN_FLAGS:
        if name in given:
            given[name] = _pairs(given[name], _field_flags(name)[0])
    return TrainConfig(**given)


def _train(args: argparse.Namespace) -> int:
    from . import distributed
    from .train import run_training

    cfg = _train_config(args)
    run = run_training(cfg, experiment=args.experiment, root=args.results, data_root=args.data_root,
                       device=args.device, threads=args.threads, progress=not args.no_progress)
    if distributed.world_from_env().rank != 0:   # under torchrun, rank 0 reports
        return 0
    summary = run.summary
    print(f"run: {run.dir.path}")
    print(f"best epoch {summary['best_epoch'] + 1}: " + ", ".join(f"{k} {v:.4f}" for k, v in summary["best"].items()))
    print(f"training time {summary['train_time_total']:.1f}s over {summary['epochs']} epochs")
    return 0


def _add_model_source(p: argparse.ArgumentParser) -> None:
    """--run DIR | --checkpoint PATH, and --which: the model that certify and evaluate read."""
    from .train import CHECKPOINTS, DEFAULT_CHECKPOINT

    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", metavar="DIR", help="a run directory results/<experiment>/<hash>/")
    src.add_argument("--checkpoint", metavar="PATH",
                     help="a checkpoint .pt file of a run (its config: inside the file or config.json beside it)")
    p.add_argument("--which", default=None,
                   help=f"with --run: the {' or '.join(CHECKPOINTS)} checkpoint (default: {DEFAULT_CHECKPOINT}, "
                        "the final model, as the randomized-smoothing papers certify)")


def _add_certify(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("certify", help="certify a trained model with randomized smoothing (Cohen et al.)",
                       description="CERTIFY every selected example of a dataset split with the Gaussian-smoothed "
                                   "model of a stored run (its last checkpoint, or --which best) or of a checkpoint file, "
                                   "writing the reference TSV (idx label predict radius correct time + p_lower "
                                   "count n). Re-running with the same --out resumes; disjoint --start/--stop "
                                   "ranges shard a run.")
    _add_model_source(p)
    p.add_argument("--sigma", type=float, default=None,
                   help="noise level (default: the run's training sigma, if its method has one)")
    p.add_argument("--dataset", default=None, help="dataset (default: the run's)")
    p.add_argument("--split", default="test", help="train, val or test (default: test)")
    p.add_argument("--n0", type=int, default=100, help="selection samples (default: 100)")
    p.add_argument("--n", type=int, default=100_000, help="estimation samples (default: 100,000)")
    p.add_argument("--alpha", type=float, default=0.001, help="failure probability (default: 0.001)")
    p.add_argument("--batch", type=int, default=1000, help="noisy samples per forward (default: 1000)")
    p.add_argument("--start", type=int, default=0, help="first dataset index (default: 0)")
    p.add_argument("--stop", type=int, default=None, help="index to stop before (default: the end)")
    p.add_argument("--skip", type=int, default=1, help="certify every SKIP-th index (default: 1)")
    p.add_argument("--out", required=True, metavar="PATH", help="output TSV (resumed if it exists)")
    p.add_argument("--seed", type=int, default=0, help="noise seed; example idx uses (seed, idx)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument("--channels-last", choices=["auto", "on", "off"], default="auto",
                   help="channels-last batches, same predictions (default auto: on for a CPU model)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the model for full batches (same fp32 classifier; pays off at large n)")
    p.add_argument("--data-root", default=None, help="directory with the datasets (default: $RS_DATA or data/)")
    p.add_argument("--no-progress", action="store_true")


def _open_run(args: argparse.Namespace) -> Any:
    """The :class:`~rs_lib.train.Run` of --run/--checkpoint, checked before any heavy work: a run
    is verified (config hash, sizes), a file must be a checkpoint of a run."""
    from pathlib import Path

    from . import _validate as check
    from . import store
    from .train import CHECKPOINTS, Run

    if args.run is not None:
        if args.which is not None:
            check.choice("--which", args.which, CHECKPOINTS)
        if not Path(args.run).is_dir():
            store.open_run_dir(args.run)   # raises, naming --run
        return Run.open(args.run, name="--run")
    if args.which is not None:
        raise ValueError("--which chooses a checkpoint of --run; --checkpoint names the file itself")
    if Path(args.checkpoint).is_dir():
        raise ValueError(f"--checkpoint {args.checkpoint!r} does not exist or is not a file; give a "
                         "checkpoint_*.pt of a run (or the run's folder as --run)")
    return Run.open(args.checkpoint, name="--checkpoint")


def _check_out(out: Any) -> None:
    """--out must be a file path in a writable folder (the file itself is checked when opened)."""
    from pathlib import Path

    from . import _validate as check
    from . import store

    if out.is_dir():
        raise ValueError(f"--out {str(out)!r} is a directory; give a file path such as {str(out / 'certify.tsv')!r}")
    folder = out.parent if str(out.parent) else Path(".")
    check.directory("--out's folder", folder)
    store.ensure_writable(folder, "--out's folder")


def _certify(args: argparse.Namespace) -> int:
    from pathlib import Path

    from . import _validate as check
    from . import data
    from .smoothing import CertifySettings, Selection, Smooth, acr, certify_dataset

    for name in ("n0", "n", "batch", "skip"):
        check.positive_int(f"--{name}", getattr(args, name))
    check.probability("--alpha", args.alpha)
    check.integer("--start", args.start, low=0)
    if args.stop is not None:
        check.integer("--stop", args.stop, low=args.start)
    check.integer("--seed", args.seed, low=0)
    check.choice("--split", args.split, ("train", "val", "test"))
    out = Path(args.out)
    _check_out(out)
    if args.sigma is not None:
        check.positive("--sigma", args.sigma)
    device = check.resolve_device("--device", args.device)
    run = _open_run(args)
    cfg = run.config
    sigma = args.sigma if args.sigma is not None else cfg.method_params.get("sigma")
    if sigma is None:
        raise ValueError(f"--sigma is required: the run's method {cfg.method!r} has no training sigma")
    check.positive("--sigma", sigma)
    dataset = args.dataset or cfg.dataset
    try:
        info = data.dataset_info(dataset)
    except ValueError as err:
        raise ValueError(f"--dataset: {err}") from None
    if info.shape != data.dataset_info(cfg.dataset).shape:
        raise ValueError(f"--dataset {dataset!r} has inputs {info.shape}, the model expects "
                         f"{data.dataset_info(cfg.dataset).shape}")

    model = run.load_model(args.which, device=device)
    split = data.load(dataset, args.split, root=args.data_root, val_size=cfg.val_size)
    if args.start >= len(split):
        raise ValueError(f"--start {args.start} is past the end of {dataset} '{args.split}' ({len(split)} "
                         f"examples); give --start in [0, {len(split) - 1}]")
    images = _FloatImages(split.images)
    channels_last = {"auto": "auto", "on": True, "off": False}[args.channels_last]
    smooth = Smooth(model, info.num_classes, sigma, channels_last=channels_last, compile=args.compile)
    frame = certify_dataset(smooth, images, split.labels,
                            settings=CertifySettings(n0=args.n0, n=args.n, alpha=args.alpha, batch_size=args.batch),
                            out_path=out, select=Selection(start=args.start, stop=args.stop, skip=args.skip),
                            seed=args.seed, progress=not args.no_progress)
    print(f"certified {len(frame)} examples into {out} (sigma {sigma}, n {args.n}, alpha {args.alpha}): "
          f"accuracy {frame['correct'].mean():.4f}, ACR {acr(frame):.4f}, "
          f"abstained {(frame['predict'] == Smooth.ABSTAIN).mean():.4f}")
    return 0


class _FloatImages:
    """uint8 images (N, C, H, W) read one at a time as float32 in [0, 1] (no full float copy)."""

    def __init__(self, images: Any) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, idx: int) -> Any:
        return self.images[idx].float().div_(255)


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="clean / PGD-k / AutoAttack accuracy of a stored run or checkpoint",
                       description="Robust accuracy (l-inf) of a stored run's last (or --which best) model, or of a checkpoint "
                                   "file, on the first --n examples of a split, under named protocols; prints a table.")
    _add_model_source(p)
    p.add_argument("--protocol", nargs="+", default=["clean", "pgd20_bs"],
                   help="clean, pgd20_bs, pgd100_bs, pgd20_rs, pgd100_rs, autoattack_standard, autoattack_fast "
                        "(default: clean pgd20_bs)")
    p.add_argument("--eps", type=float, default=None, help="l-inf radius in [0, 1] units (default: the run's eps)")
    p.add_argument("--dataset", default=None, help="dataset (default: the run's)")
    p.add_argument("--split", default="test", help="train, val or test (default: test)")
    p.add_argument("--n", type=int, default=1000, help="first N examples of the split (default: 1000)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0, help="random starts / AutoAttack seed (default: 0)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument("--data-root", default=None, help="directory with the datasets (default: $RS_DATA or data/)")
    p.add_argument("--no-progress", action="store_true")


def _evaluate(args: argparse.Namespace) -> int:
    import time

    from . import _validate as check
    from . import data
    from .evaluate import evaluate
    from .robustness import PROTOCOLS, robust_accuracy, threat_eps

    for name in args.protocol:
        check.choice("--protocol", name, ["clean", *PROTOCOLS])
    for name in ("n", "batch_size"):
        check.positive_int(f"--{name.replace('_', '-')}", getattr(args, name))
    check.integer("--seed", args.seed, low=0, high=2**63 - 1)
    check.choice("--split", args.split, ("train", "val", "test"))
    device = check.resolve_device("--device", args.device)
    if args.eps is not None:
        check.number("--eps", args.eps, low=0.0, high=1.0, low_open=True)
    run = _open_run(args)
    cfg = run.config
    eps = args.eps if args.eps is not None else threat_eps(cfg)
    if eps is None and set(args.protocol) != {"clean"}:
        raise ValueError(f"--eps is required: the run's method {cfg.method!r} has no eps")
    if eps is not None:  # l-inf radius of images in [0, 1] (8/255 is 0.0314, not 8)
        check.number("--eps", eps, low=0.0, high=1.0, low_open=True)
    dataset = args.dataset or cfg.dataset
    check.choice("--dataset", dataset, data.DATASETS)
    model = run.load_model(args.which, device=device)
    split = data.load(dataset, args.split, root=args.data_root, n=args.n, val_size=cfg.val_size)
    print(f"{cfg.method} on {dataset} {args.split} (first {len(split)}), eps {eps}")
    print(f"{'protocol':20s} {'accuracy':>8s} {'seconds':>8s}  label")
    for name in args.protocol:
        start = time.perf_counter()
        if name == "clean":
            batches = data.batches(split, args.batch_size, device=device)
            accuracy, label = evaluate(model, batches, ["clean"])["clean_acc"], "clean accuracy"
        else:
            result = robust_accuracy(model, split, protocol=name, eps=eps, batch_size=args.batch_size,
                                     seed=args.seed, progress=not args.no_progress)
            accuracy, label = result.accuracy, result.label
        print(f"{name:20s} {accuracy:8.4f} {time.perf_counter() - start:8.1f}  {label}")
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
    p.add_argument("--no-browser-check", action="store_true",
                   help="do not open the built site in headless Chromium to check it")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads of each notebook's kernel (default: $OMP_NUM_THREADS, else all cores)")
    p.add_argument("-p", "--param", action="append", metavar="KEY=VALUE",
                   help="a notebook parameter, repeatable (e.g. --param epochs=10); every selected notebook "
                        "must declare it in its 'parameters' cell")
    p.add_argument("--read-only", action="store_true",
                   help="render from the store only (after a `sweep`): a missing run is an error, never trained")


def _book(args: argparse.Namespace) -> int:
    from . import _validate as check
    from .book import build_book
    from .profiles import PROFILES

    check.choice("--profile", args.profile, PROFILES)
    build_book(profile=args.profile, device=args.device, notebooks=args.notebooks, build=not args.no_build,
               threads=args.threads, parameters=_pairs(args.param, "--param"), read_only=args.read_only,
               browser_check=not args.no_browser_check)
    return 0


def _add_discard(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("discard", help="set a damaged run or certification TSV aside (it is recomputed)",
                       description="Move a run directory, or a certification TSV with its .meta.json sidecar, into "
                                   ".discarded/ beside it (nothing is deleted); the next train / certify / notebook "
                                   "that needs it recomputes it.")
    p.add_argument("path", help="results/<experiment>/<key>/ or a certify TSV")


def _discard(args: argparse.Namespace) -> int:
    from . import store

    moved = store.discard(args.path)
    print(f"moved {args.path} to {moved}; re-run the command that made it to recompute it")
    return 0


def _add_sweep(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="compute experiments' runs through submitit (SLURM arrays or local GPUs)",
                       description="Compute every run, evaluation and certification that the selected "
                                   "experiments' notebooks read, as submitit jobs: one job array per dependency "
                                   "wave on SLURM, or one job per local GPU / CPU worker. Finished results are "
                                   "skipped, so a repeated sweep submits nothing. See the README's 'Paper scale "
                                   "on a cluster or a multi-GPU box'.")
    p.add_argument("experiments", nargs="*", help="experiment names (see `list`)")
    p.add_argument("--chapter", default=None, help="every experiment of a chapter")
    p.add_argument("--all", action="store_true", help="every experiment of the book")
    p.add_argument("--profile", default="cpu", help="smoke, cpu or paper")
    p.add_argument("-p", "--parameter", action="append", metavar="KEY=VALUE",
                   help="override an experiment knob, as a notebook parameter (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="list the jobs, what is finished and GPU-hours; submit nothing")
    p.add_argument("--status", action="store_true", help="finished, running, failed and missing jobs of this sweep")
    p.add_argument("--executor", default="local", help="local (this machine) or slurm")
    p.add_argument("--gpus", default=None, metavar="0,1,...", help="local: one job per listed GPU at a time")
    p.add_argument("--cpu-workers", type=int, default=0, metavar="N", help="local without GPUs: N CPU jobs at a time")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads per job")
    p.add_argument("--partition", default=None, help="slurm: partition")
    p.add_argument("--gpus-per-job", type=int, default=1, help="slurm: GPUs per job (default 1)")
    p.add_argument("--cpus-per-job", type=int, default=None, help="slurm: CPUs per job")
    p.add_argument("--timeout-min", type=int, default=None,
                   help="minutes per job before it is checkpointed and requeued (slurm default 1440)")
    p.add_argument("--array-parallelism", type=int, default=256, help="slurm: tasks of an array running at once")
    p.add_argument("--max-requeue", type=int, default=20, help="times a job may be requeued after a timeout")
    p.add_argument("--max-iterations", type=int, default=None,
                   help="paper-path smoke test: stop each training after N steps (use with a scratch --results)")
    p.add_argument("--costs", default=None, metavar="JSON", help="GPU check file for the cost table "
                                                                 "(default: benchmarks/gpu_check.json if present)")
    p.add_argument("--results", default=None, help="run store root (default: $RS_RESULTS or results/)")


def _sweep(args: argparse.Namespace) -> int:
    from . import _validate as check
    from . import costs, sweep
    from .profiles import PROFILES

    check.choice("--profile", args.profile, PROFILES)
    check.choice("--executor", args.executor, sweep.EXECUTORS)
    if args.dry_run and args.status:
        raise ValueError("give --dry-run or --status, not both")
    overrides = _pairs(args.parameter, "-p")
    resources = None
    if not (args.dry_run or args.status):   # every flag is checked before the plan is built
        if args.max_iterations is not None:
            check.positive_int("--max-iterations", args.max_iterations)
        if args.executor == "local" and (args.gpus_per_job != 1 or args.array_parallelism != 256):
            raise ValueError("--gpus-per-job and --array-parallelism are SLURM options; use --executor slurm")
        resources = sweep.Resources(
            executor=args.executor, gpus=sweep.parse_gpus(args.gpus) if args.gpus else (),
            cpu_workers=args.cpu_workers, partition=args.partition, gpus_per_job=args.gpus_per_job,
            cpus_per_job=args.cpus_per_job, timeout_min=args.timeout_min,
            array_parallelism=args.array_parallelism, max_requeue=args.max_requeue, threads=args.threads)
    experiments = sweep.select(args.experiments, chapter=args.chapter, all_=args.all)
    jobs = sweep.collect(experiments, args.profile, overrides)
    record = sweep.record_dir(args.results, experiments, args.profile, overrides)
    runner = sweep.JobRunner()
    _, job_done = runner._functions()
    if args.dry_run:
        table = costs.load_table(args.costs)
        rows = sweep.estimate(jobs, root=args.results, job_done=job_done, table=table)
        print(sweep.format_dry_run(rows, chapters=sweep.chapters_of(experiments), source=table.source))
        return 0
    if args.status:
        print(f"sweep record: {record}")
        print(sweep.format_status(sweep.job_states(jobs, record, root=args.results, job_done=job_done)))
        return 0
    sweep.write_request(record, experiments, args.profile, overrides, resources)
    result = sweep.run_sweep(jobs, resources, record=record, root=args.results, runner=runner,
                             max_iterations=args.max_iterations)
    print(f"submitted {len(result.submitted)} jobs, {len(result.skipped)} already done or running"
          + (f", {len(result.failed)} failed (see `sweep --status`)" if result.failed else ""))
    return 1 if result.failed else 0


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
    sub = parser.add_subparsers(dest="command", required=True,
                                metavar="{train,certify,evaluate,data,book,sweep,list,discard}")
    _add_train(sub)
    _add_certify(sub)
    _add_evaluate(sub)
    _add_data(sub)
    _add_book(sub)
    _add_sweep(sub)
    sub.add_parser("list", help="list methods, datasets, models and experiments")
    _add_discard(sub)
    return parser


COMMANDS = {"train": _train, "certify": _certify, "evaluate": _evaluate, "data": _data, "book": _book,
            "sweep": _sweep, "list": _list, "discard": _discard}
# User-caused failures: bad values (ValueError, which the store's and the data's errors extend)
# and files that are missing, unreadable or unwritable (OSError).  Anything else is a bug.
USER_ERRORS = (ValueError, OSError)


def user_error_message(err: BaseException) -> str:
    """The one line (or short paragraph) shown for a user-caused failure."""
    if isinstance(err, OSError) and not isinstance(err, FileNotFoundError) and err.filename:
        return (f"{err.strerror or err}: {err.filename}; check that the path exists and that you may "
                "read (and write) it")
    return str(err)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; a user error prints ``error: ...`` and returns 2 (``--debug``: raise)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    args = build_parser().parse_args([a for a in argv if a != "--debug"])
    try:
        return COMMANDS[args.command](args)
    except USER_ERRORS as err:
        if debug:
            raise
        print(f"error: {user_error_message(err)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
