"""rs_lib.cost: interleaved in-process cost measurement with pass counts beside the times."""

from __future__ import annotations

import pandas as pd
import pytest

from rs_lib import cost
from rs_lib.train import TrainConfig

NAMES = ["standard", "fast_at", "trades", "backward_smoothing"]


@pytest.fixture(scope="module")
def table():
    configs = {n: (n, cost.paper_config(n)) for n in NAMES}
    return cost.measure(configs, model="small_cnn", dataset="synthetic", device="cpu",
                        timing=cost.Timing(batch_size=16, iters=2, warmup=1))


def test_measure_gives_stated_and_hooked_pass_counts_beside_median_times(table):
    rows = table.set_index("label")
    assert list(rows.index) == NAMES
    assert rows.loc["trades", ["forward", "backward"]].tolist() == [13, 12]  # 1 + 10 attack steps + 2, TRADES-10
    assert rows.loc["trades", "backward_input"] == 10 and rows.loc["trades", "backward_weights"] == 2
    assert rows.loc["backward_smoothing", ["forward", "backward"]].tolist() == [4, 4]
    assert rows["hooks_agree"].all()
    assert (rows["s_per_iter"] > 0).all()
    assert rows.loc["standard", "time / standard"] == 1.0 and rows.loc["standard", "ideal / standard"] == 1.0
    assert rows.loc["trades", "ideal / standard"] > rows.loc["backward_smoothing", "ideal / standard"] > 1
    assert table.attrs["clock"] == "process CPU time" and table.attrs["iters"] == 2


def test_ratio_and_contradictions_read_the_table(table):
    assert cost.ratio(table, "trades", "standard") == pytest.approx(table.set_index("label").loc["trades", "time / standard"])
    fake = pd.DataFrame({"label": ["standard", "ok", "off"], "measured / ideal": [1.0, 1.2, 1.6]})
    assert cost.contradictions(fake) == ["off"]
    assert cost.contradictions(fake, tolerance=0.1) == ["ok", "off"]
    with pytest.raises(ValueError, match="'nope' is not a label"):
        cost.ratio(table, "nope", "standard")


def test_config_for_turns_instrumentation_off_and_keeps_the_run_hyperparameters():
    name, cfg = cost.config_for(TrainConfig(method="backward_smoothing", method_params={"eps": 0.2, "instrument": True}))
    assert name == "backward_smoothing" and cfg.eps == 0.2 and cfg.instrument is False


@pytest.mark.parametrize("configs, match", [
    ({}, "non-empty mapping"),
    ({"a": ("no_such_method", None)}, r"configs\['a'\]"),
    ({"a": ("fast_at", cost.paper_config("fast_at"))}, "include a 'standard'"),
])
def test_measure_rejects_bad_configs_before_any_work(configs, match):
    with pytest.raises(ValueError, match=match):
        cost.measure(configs, model="small_cnn", dataset="synthetic")
