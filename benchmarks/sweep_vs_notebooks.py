"""Wall time of computing some experiments through ``sweep`` (submitit local executor, N CPU workers)
then rendering their notebooks read-only, beside executing the same notebooks one after another
(each training its runs in its own kernel), in one script, each into a fresh store.

Printed per phase: wall time (``time.perf_counter``) and the CPU time of the child processes
(``resource.getrusage(RUSAGE_CHILDREN)``: kernels, submitit controllers and jobs), which other load
on a shared machine does not inflate.  The sequential path runs first, the sweep second.

    OMP_NUM_THREADS=1 python benchmarks/sweep_vs_notebooks.py --profile smoke --workers 2 \\
        noise_training bs_hessian
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(label: str, fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), children_cpu()
    fn()
    wall, cpu = time.perf_counter() - wall, children_cpu() - cpu
    print(f"{label:44s} wall {wall:7.1f} s   child CPU {cpu:7.1f} s", flush=True)
    return wall, cpu


def render(names: list[str], profile: str, out: Path, read_only: bool) -> None:
    from rs_lib import execute

    for name in names:
        execute.execute_notebook(name, profile=profile, output_dir=out, progress=False, threads=1,
                                 read_only=read_only)


def sweep(names: list[str], profile: str, workers: int) -> None:
    cmd = [sys.executable, "-m", "rs_lib", "sweep", *names, "--profile", profile,
           "--cpu-workers", str(workers), "--threads", "1"]
    subprocess.run(cmd, check=True, cwd=REPO, stdout=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiments", nargs="+")
    parser.add_argument("--profile", default="smoke")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ["RS_RESULTS"] = str(tmp / "sequential")
        seq, _ = timed(f"notebooks one after another ({len(args.experiments)})",
                       lambda: render(args.experiments, args.profile, tmp / "out1", read_only=False))
        os.environ["RS_RESULTS"] = str(tmp / "swept")
        swept, _ = timed(f"sweep, {args.workers} CPU workers",
                         lambda: sweep(args.experiments, args.profile, args.workers))
        shown, _ = timed("notebooks read-only from the sweep's store",
                         lambda: render(args.experiments, args.profile, tmp / "out2", read_only=True))
        again, _ = timed("repeated sweep (submits nothing)",
                         lambda: sweep(args.experiments, args.profile, args.workers))
    print(f"sweep + read-only render / sequential notebooks: {(swept + shown) / seq:.2f} "
          f"(machine: {os.cpu_count()} cores, shared)")


if __name__ == "__main__":
    main()
