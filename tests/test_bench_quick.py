"""The benchmark protocol end to end on a tiny budget: every arm runs and the
report has every column."""
import json
import os

import pytest

from acetest_ml.bench.__main__ import main as bench_main

DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "acetest-data")


def test_bench_quick_tiny(tmp_path):
    have_data = os.path.isdir(DATA)
    cfg = tmp_path / "apis.yaml"
    cfg.write_text(f"""
seeds: {{train: 1, eval: 2}}
budget: {{train: 300, eval: 200}}
jobs: 2
exploration: 0.05
min_per_class: 3
acetest_apis: {'[tf.raw_ops.BiasAdd]' if have_data else '[]'}
registry_apis: [tf.raw_ops.Add, torch.ops.aten.mm]
quick:
  apis: [{'tf.raw_ops.BiasAdd, ' if have_data else ''}tf.raw_ops.Add, torch.ops.aten.mm]
  budget: {{train: 40, eval: 20}}
""")
    out = tmp_path / "res"
    rc = bench_main(["--config", str(cfg), "--quick", "--out", str(out), "--acetest-data", DATA,
                     "--no-progress"])
    assert rc == 0
    res = json.load(open(out / "results.json"))
    for scope in ("overall", "overall_all"):
        for key in ("baseline_pass_rate", "filtered_pass_rate", "online_pass_rate",
                    "mean_balanced_accuracy", "lost_crash_signatures", "apis"):
            assert key in res[scope], (scope, key)
    assert len(res["overall_all"]["apis"]) == (3 if have_data else 2)
    for api, row in res["apis"].items():
        for arm in ("baseline", "filtered", "online"):
            assert row[arm]["executed"] == 20, (api, arm)
    report = (out / "report.md").read_text()
    for col in ("baseline pass", "filtered pass", "online pass", "ratio", "bal. acc", "exec/s",
                "valid exec/s", "µs/cand", "crash sigs", "lost"):
        assert col in report, col
    assert (out / "pass_rate_per_api.png").stat().st_size > 1000
    assert (out / "overall.png").stat().st_size > 1000
    # resuming a finished bench reuses every campaign and gives the same pass rates
    rc = bench_main(["--config", str(cfg), "--quick", "--resume", str(out), "--acetest-data", DATA,
                     "--no-progress"])
    assert rc == 0
    again = json.load(open(out / "results.json"))
    assert again["overall_all"]["baseline_pass_rate"] == res["overall_all"]["baseline_pass_rate"]
    assert again["overall_all"]["filtered_pass_rate"] == res["overall_all"]["filtered_pass_rate"]
