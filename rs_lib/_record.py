"""Which store entries a process looks up: the recording hook behind the plan-equals-notebook tests.

With ``$RS_RECORD_KEYS`` set to a file, every run (``train.run_training``) and every cached result
on a run (``Run.cached``, ``smoothing.certify_run``) that is looked up appends one JSON line
``{"store": <run-store experiment>, "key": <key>}`` to it, the key being the run's folder name or
``"<run folder>/<result file>"``, the same keys as :class:`rs_lib.plan.Job`.  Unset, nothing is written.
"""

from __future__ import annotations

import json
import os

ENV = "RS_RECORD_KEYS"


def lookup(store: str, key: str) -> None:
    """Append the lookup of ``key`` in the run store ``store`` to ``$RS_RECORD_KEYS`` (if set)."""
    path = os.environ.get(ENV)
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"store": store, "key": key}) + "\n")
