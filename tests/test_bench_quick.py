"""The benchmark protocol end to end on a tiny budget: every arm runs and the
report has every column."""
import json
import os

import pytest

from acetest_ml.bench.__main__ import main as bench_main

from helpers import ACETEST_DATA as DATA


def test_bench_quick_tiny(tmp_path, monkeypatch, capsys):
    from acetest_ml.bench import protocol
    monkeypatch.setattr(protocol, "CHUNK_PER_JOB", 1)  # chunks of 2 APIs (jobs 2)
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
  budget: {{train: 40, eval: 12}}
""")
    out = tmp_path / "res"
    rc = bench_main(["--config", str(cfg), "--quick", "--out", str(out), "--acetest-data", DATA,
                     "--no-progress"])
    assert rc == 0
    # the arms take turns per chunk of APIs, so they meet the same load
    log = [ln.split("] ", 1)[1] for ln in capsys.readouterr().out.splitlines() if ln.startswith("[bench ")]
    turns = [ln.split(": ")[0].split(" (")[0] + " " + ln.split(": ")[1].split(" ")[0]
             for ln in log if ln.startswith("APIs ")]
    arms = ["baseline", "filtered", "online", "learned", "learned_filter"]
    n_chunks = 2 if have_data else 1
    assert turns == [f"APIs {c}/{n_chunks} {a}" for c in range(1, n_chunks + 1) for a in arms], turns
    res = json.load(open(out / "results.json"))
    assert sorted(res["overall_all"]["apis"]) == sorted(res["apis"])
    assert len(res["apis"]) == (3 if have_data else 2)
    for scope in ("overall", "overall_all"):
        o = res[scope]
        rows = [res["apis"][a] for a in o["apis"]]
        assert rows, scope
        for arm in ("baseline", "filtered", "online"):  # pooled over the scope's APIs
            ex = sum(r[arm]["executed"] for r in rows)
            assert o[f"{arm}_pass_rate"] == pytest.approx(sum(r[arm]["passed"] for r in rows) / ex)
        if o["baseline_pass_rate"]:
            assert o["ratio_pooled"] == pytest.approx(o["filtered_pass_rate"] / o["baseline_pass_rate"])
        accs = [r["classifier"]["balanced_accuracy"] for r in rows if r["classifier"]]
        if accs:
            assert o["mean_balanced_accuracy"] == pytest.approx(sum(accs) / len(accs))
        assert o["lost_crash_signatures"] == sorted(
            f"{a}: {s}" for a in o["apis"] for s in res["apis"][a]["lost_crash_signatures"])
        for key in ("learned_pass_rate", "learned_filter_pass_rate", "learned_valid_exec_per_s",
                    "learned_filter_candidates_per_exec"):
            assert key in o, (scope, key)
    for api, row in res["apis"].items():
        for arm in ("baseline", "filtered", "online", "learned", "learned_filter"):
            assert row[arm]["executed"] == 12, (api, arm)
    # the learned+filter arm starts from the rules learned offline from the training arm
    from acetest_ml.solve.rules import load_rules_file
    prior = load_rules_file(str(out / "work" / "train_rules.yaml"))
    lf = json.load(open(out / "work" / "learned_filter" / "summary.json"))["apis"]
    for api, exprs in prior.items():
        got = {r["expr"] for r in lf[api]["learned"]["rules"] if r["source"] == "prior"}
        assert got == set(exprs), (api, got, exprs)
    assert "rule_learning_s" in res["timings"]
    report = (out / "report.md").read_text()
    for col in ("baseline pass", "filtered pass", "online pass", "ratio", "bal. acc", "exec/s",
                "valid exec/s", "µs/cand", "crash sigs", "lost", "learned+filter", "cand/exec learned"):
        assert col in report, col
    for api in res["apis"]:
        assert api in report
    o = res["overall_all"]
    assert f"{100 * o['baseline_pass_rate']:.1f}%" in report
    # the plots are real images with something drawn on them
    import matplotlib.image as mpimg
    for png in ("pass_rate_per_api.png", "overall.png"):
        img = mpimg.imread(out / png)
        assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100, png
        assert len({tuple(px) for px in img.reshape(-1, img.shape[2])[::97]}) > 3, png
    # resuming a finished bench reuses every campaign and gives the same pass rates
    rc = bench_main(["--config", str(cfg), "--quick", "--resume", str(out), "--acetest-data", DATA,
                     "--no-progress"])
    assert rc == 0
    again = json.load(open(out / "results.json"))
    assert again["overall_all"]["baseline_pass_rate"] == res["overall_all"]["baseline_pass_rate"]
    assert again["overall_all"]["filtered_pass_rate"] == res["overall_all"]["filtered_pass_rate"]
