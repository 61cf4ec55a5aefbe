"""What the data fingerprint (part of every run's store key) adds to a run's start.

Times ``rs_lib.data.fingerprint`` on a dataset (default: the full Fashion-MNIST, 60,000 training
images) three ways, each in a fresh cache folder: the first computation (every file hashed), a
later process (the digests read back from the cache file, one ``stat`` per file), and a repeat in
the same process.  Times are the process's CPU clock and the wall clock, best of ``--repeats``.

    OMP_NUM_THREADS=1 python benchmarks/data_fingerprint.py
    python benchmarks/data_fingerprint.py --dataset cifar10 --root ~/data
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from rs_lib import data


def _timed(fn) -> tuple[float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    fn()
    return time.process_time() - cpu, time.perf_counter() - wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--root", default=None)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows = {"first (cold cache)": [], "new process (cache file)": [], "same process": []}
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as cache:
            os.environ["RS_CACHE"] = cache
            data._FingerprintCache._memory.clear()
            rows["first (cold cache)"].append(_timed(lambda: data.fingerprint(args.dataset, root=args.root)))
            rows["same process"].append(_timed(lambda: data.fingerprint(args.dataset, root=args.root)))
            data._FingerprintCache._memory.clear()
            rows["new process (cache file)"].append(_timed(lambda: data.fingerprint(args.dataset, root=args.root)))
    print(f"data.fingerprint({args.dataset!r}) = {data.fingerprint(args.dataset, root=args.root)}")
    print(f"{'case':28s} {'cpu s':>8s} {'wall s':>8s}")
    for name, times in rows.items():
        print(f"{name:28s} {min(t[0] for t in times):8.4f} {min(t[1] for t in times):8.4f}")


if __name__ == "__main__":
    main()
