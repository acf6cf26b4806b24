"""Real campaigns on real TensorFlow and PyTorch ops, through the CLI."""
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from acetest_ml.cli import main

from helpers import ACETEST_DATA, CRASH_API, CRASH_RULES, candidates, needs_acetest_data, needs_tf_crash

ENV = dict(os.environ, OMP_NUM_THREADS="1", TF_CPP_MIN_LOG_LEVEL="2")


def _rows(out):
    return candidates(out, "api, idx, input, decision, outcome")


def test_short_campaign_tf_and_torch(tmp_path, capsys):
    out = str(tmp_path / "c")
    rc = main(["campaign", "--api", "tf.raw_ops.Add", "--api", "torch.ops.aten.mm", "--budget", "25",
               "--seed", "0", "--out", out, "--no-progress"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "tf.raw_ops.Add" in printed and "torch.ops.aten.mm" in printed and "overall" in printed
    summary = json.load(open(os.path.join(out, "summary.json")))
    for api in ("tf.raw_ops.Add", "torch.ops.aten.mm"):
        s = summary["apis"][api]
        assert s["executed"] == 25
        assert s["passed"] + s["invalid"] + s["crash"] + s["timeout"] == 25
        assert s["passed"] > 0 and s["invalid"] > 0  # random shapes: both outcomes occur
        assert 0 < s["pass_rate"] < 1 and s["exec_per_s"] > 0
        # the figures agree with the store's rows
        mine = [r for r in _rows(out) if r[0] == api]
        assert s["passed"] == sum(1 for r in mine if r[4] == "pass")
        assert s["invalid"] == sum(1 for r in mine if r[4] == "invalid")
        assert s["pass_rate"] == pytest.approx(s["passed"] / 25)
        assert s["exec_per_s"] == pytest.approx(25 / s["elapsed_s"])
        assert s["valid_exec_per_s"] == pytest.approx(s["passed"] / s["elapsed_s"])
        assert len(s["crash_signatures"]) <= s["crash"] + s["timeout"]
        assert s["health"] == "ok" and s["status"] == "done"
    o = summary["overall"]
    assert o["executed"] == 50 and o["passed"] == sum(summary["apis"][a]["passed"] for a in summary["apis"])
    assert o["pooled_pass_rate"] == pytest.approx(o["passed"] / 50)
    rows = _rows(out)
    assert len(rows) == 50 and all(r[4] in ("pass", "invalid", "crash", "timeout") for r in rows)


@needs_tf_crash
def test_crashing_op_is_labelled_and_campaign_goes_on(tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text(CRASH_RULES)
    out = str(tmp_path / "c")
    rc = main(["campaign", "--api", CRASH_API, "--api", "tf.raw_ops.Add", "--budget", "4",
               "--seed", "1", "--out", out, "--no-progress", "--jobs", "1", "--rules", str(rules)])
    assert rc == 0
    summary = json.load(open(os.path.join(out, "summary.json")))
    conv = summary["apis"][CRASH_API]
    assert conv["executed"] == 4 and conv["crash"] == 4  # worker restarted after every crash
    assert any("SIGABRT" in s and "Check failed" in s for s in conv["crash_signatures"])
    assert len(conv["crash_signatures"]) == 1  # one bug, one signature
    assert summary["apis"]["tf.raw_ops.Add"]["executed"] == 4  # later API still ran
    bugs = os.listdir(os.path.join(out, "bugs"))
    assert len(bugs) == 1  # one bug folder per signature
    # the reproducer rebuilds the same call and crashes the same way, standalone
    repro = os.path.join(out, "bugs", bugs[0], "reproducer.py")
    r = subprocess.run([sys.executable, repro], env=ENV, capture_output=True, text=True, timeout=120)
    assert r.returncode < 0 or r.returncode == 134
    assert "Check failed" in r.stderr


def test_resume_after_sigkill_keeps_every_run(tmp_path):
    out = str(tmp_path / "killed")
    cmd = [sys.executable, "-m", "acetest_ml.cli", "campaign", "--api", "tf.raw_ops.BiasAdd",
           "--budget", "400", "--seed", "5", "--out", out, "--no-progress"]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 120
    n = 0
    while time.time() < deadline:
        time.sleep(0.1)
        if os.path.exists(os.path.join(out, "runs.sqlite")):
            try:
                n = len(_rows(out))
            except sqlite3.OperationalError:
                continue
            if n >= 8:
                break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = _rows(out)
    assert 8 <= len(before) < 400, "campaign finished before it could be killed"
    # a second start without --resume refuses to mix campaigns
    r = subprocess.run(cmd, env=ENV, capture_output=True, text=True)
    assert r.returncode == 2 and "--resume" in r.stderr
    r = subprocess.run(cmd + ["--resume"], env=ENV, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    after = _rows(out)
    assert after[: len(before)] == before  # nothing recorded was lost or changed
    assert [r[1] for r in after] == list(range(len(after)))  # no index repeated or skipped
    assert sum(1 for r in after if r[4] in ("pass", "invalid", "crash", "timeout")) == 400
    # and the resumed campaign is the same as an uninterrupted one with the same seed
    fresh = str(tmp_path / "fresh")
    r = subprocess.run(cmd[:cmd.index("--out") + 1] + [fresh, "--no-progress"], env=ENV,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert [x[2] for x in _rows(fresh)] == [x[2] for x in after]


@needs_acetest_data
def test_campaign_on_acetest_constraints_three_apis(tmp_path):
    out = str(tmp_path / "ace")
    rc = main(["campaign", "--constraints", "acetest", "--acetest-data", ACETEST_DATA,
               "--api", "tf.raw_ops.BiasAdd", "--api", "tf.raw_ops.Conv2D", "--api", "tf.raw_ops.Tile",
               "--api", "tf.raw_ops.NoSuchOp", "--budget", "12", "--seed", "3", "--out", out, "--no-progress"])
    assert rc == 0
    s = json.load(open(os.path.join(out, "summary.json")))
    for api in ("tf.raw_ops.BiasAdd", "tf.raw_ops.Conv2D", "tf.raw_ops.Tile"):
        assert s["apis"][api]["executed"] == 12 and s["apis"][api]["constraints"] == "acetest"
    assert s["apis"]["tf.raw_ops.BiasAdd"]["passed"] > 0
    bad = s["apis"]["tf.raw_ops.NoSuchOp"]
    assert bad["status"] == "skipped" and "NoSuchOp" in bad["reason"]
    # the inputs carry the constraint set they were solved from
    origins = {json.loads(r[2])["origin"].get("set") for r in _rows(out) if r[0] == "tf.raw_ops.BiasAdd"}
    assert origins and all(o and "compute" in o for o in origins)


@needs_acetest_data
def test_acetest_constraints_repeatable_with_jobs_2_and_resume(tmp_path):
    """The same seed gives the same inputs on ACETest constraints with two
    APIs in parallel, run again or stopped and resumed."""
    base = ["campaign", "--constraints", "acetest", "--acetest-data", ACETEST_DATA,
            "--api", "tf.raw_ops.BiasAdd", "--api", "tf.raw_ops.Tile", "--seed", "7",
            "--jobs", "2", "--no-progress"]
    a, c = (str(tmp_path / n) for n in "ac")
    # a second run that stops early and is resumed repeats the first exactly
    assert main(base + ["--budget", "8", "--out", a]) == 0
    rows_a = [(r[0], r[1], r[2]) for r in _rows(a)]
    assert len({r[0] for r in rows_a}) == 2
    assert main(base + ["--budget", "4", "--out", c]) == 0
    assert [(r[0], r[1], r[2]) for r in _rows(c)] == [r for r in rows_a if r[1] < 4]
    assert main(base + ["--budget", "8", "--out", c, "--resume"]) == 0
    assert [(r[0], r[1], r[2]) for r in _rows(c)] == rows_a
