"""One rank of a ``torchrun`` training for tests/test_distributed.py (not a test module).

Usage: python -m torch.distributed.run --nproc-per-node=N tests/distributed_worker.py SPEC.json
SPEC: {"root": str, "configs": [TrainConfig kwargs, ...], "kill_after_epoch": int | null}.
With ``kill_after_epoch`` = e, every rank dies (os._exit, as a preempted job) right after epoch e's
checkpoint.
"""

import json
import os
import sys

import torch

from rs_lib.train import Control, TrainConfig, run_training


def main(spec_path: str) -> None:
    with open(spec_path) as f:
        spec = json.load(f)
    torch.set_num_threads(1)
    kill = spec.get("kill_after_epoch")

    def on_epoch_end(epoch: int, row: dict) -> None:
        if kill is not None and epoch == kill:
            torch.distributed.barrier()   # rank 0 has written the checkpoint
            os._exit(17)

    for kwargs in spec["configs"]:
        run_training(TrainConfig(**kwargs), root=spec["root"], device="cpu", progress=False,
                     control=Control(on_epoch_end=on_epoch_end))


if __name__ == "__main__":
    main(sys.argv[1])
