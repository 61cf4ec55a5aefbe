"""Shared test set-up: single-threaded torch (two 2-thread torch processes thrash each other),
deterministic seeds, and a fresh temporary results store per test."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RS_PROFILE", "smoke")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture
def results_root(tmp_path, monkeypatch):
    root = tmp_path / "results"
    monkeypatch.setenv("RS_RESULTS", str(root))
    return root


@pytest.fixture(scope="session")
def smoke_executed(tmp_path_factory):
    """Execute a book notebook in the smoke profile, once per session: ``smoke_executed(name)``
    returns its executed copy.  The notebooks share one session store, as in ``make book``."""
    from rs_lib import _record
    from rs_lib import execute as runner

    out = tmp_path_factory.mktemp("executed")
    store = tmp_path_factory.mktemp("smoke-results")
    done: dict[str, object] = {}

    def record(name: str):
        """The store lookups of the notebook's execution (``rs_lib._record``; the plan tests)."""
        return out / f"{name}.keys.jsonl"

    def execute(name: str):
        if name not in done:
            with runner._environment(RS_RESULTS=str(store), **{_record.ENV: str(record(name))}):
                done[name] = runner.execute_notebook(name, profile="smoke", device="cpu", output_dir=out,
                                                     progress=False, threads=1)
        return done[name]

    execute.output_dir = out
    execute.record = record
    return execute


@pytest.fixture(scope="session")
def smoke_site(smoke_executed, tmp_path_factory):
    """The smoke-profile site, built once per session from the notebooks executed by
    ``smoke_executed``: (the html folder, ``_build/test-screenshots/`` for the screenshots kept as
    test artefacts)."""
    from rs_lib import book

    for name in book.NOTEBOOKS:
        smoke_executed(name)
    root = tmp_path_factory.mktemp("smoke-site")
    index = book.build_site(executed_dir=smoke_executed.output_dir, path_output=root)
    # Screenshots outlive pytest's rotating temporary folders: _build/ is git-ignored.
    return index.parent, book.REPO_ROOT / "_build" / "test-screenshots"
