"""``python -m acetest_ml.bench --upstream`` on the stand-in Tester (tests/upstream_standin)."""
from __future__ import annotations

import json
import os
from pathlib import Path

from acetest_ml.bench import __main__ as bench_main
from acetest_ml.bench import upstream as scope

STANDIN = Path(__file__).parent / "upstream_standin"
API = "tf.raw_ops.BiasAdd"


def test_without_a_checkout_one_line_and_exit_0(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("ACETEST_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    code = bench_main.main(["--upstream", "--acetest-home", str(tmp_path / "none")])
    out = capsys.readouterr()
    assert code == 0
    assert out.out.count("\n") == 1 and "no ACETest checkout" in out.out


def test_upstream_scope_on_the_standin(tmp_path):
    out = tmp_path / "scope"
    arms = ("upstream", "up-offline")
    doc = scope.run_scope([API, "tf.raw_ops.NotThere"], str(STANDIN), str(STANDIN / "Tester" / "data"), str(out),
                          rounds=80, arms=arms, progress=lambda m: None)
    base, off = doc["apis"][API]["upstream"], doc["apis"][API]["up-offline"]
    assert base["runs"] == off["runs"] == 80
    assert base["up_pass_rate"] == (80 - base["invalid"]) / 80
    # the offline models were trained on upstream's own (seed-A) runs, recorded with --collect
    assert off["train_run"]["runs"] == 80 and off["model"]["n"] == 80
    assert off["filter"]["scorer"] == "registry"
    assert off["up_pass_rate"] > base["up_pass_rate"] + 0.15, (base, off)
    p = doc["pooled"]
    assert p["up-offline"]["invalid_cut"] > 0.3 and p["upstream"]["invalid_cut"] == 0.0
    # the offline arm's training run is kept as that seed's upstream arm (parity reuses it)
    train = json.loads((out / "arms" / f"{API}.up-train.s1.json").read_text())
    assert train["runs"] == 80 and train["invalid"] == off["train_run"]["invalid"]
    assert doc["apis"]["tf.raw_ops.NotThere"] == {"skipped": "not in the ACETest data"}
    paths = scope.write(doc, str(out), arms)
    md = Path(paths[1]).read_text()
    assert "| up-offline | 1 | 80 |" in md and API in md
    assert json.loads(Path(paths[0]).read_text())["rounds"] == 80
    # a rerun into the same folder reuses the finished arms
    again = scope.run_scope([API], str(STANDIN), str(STANDIN / "Tester" / "data"), str(out), rounds=80,
                            arms=arms, progress=lambda m: (_ for _ in ()).throw(AssertionError(m)))
    assert again["apis"][API] == doc["apis"][API]


def test_parity_on_the_standin(tmp_path):
    """--parity: upstream, ours (faithful) and ours-ext on the same files and rounds."""
    from acetest_ml.bench import parity
    out = tmp_path / "parity"
    data = str(STANDIN / "Tester" / "data")
    doc = parity.run_parity([API, "tf.raw_ops.NotThere"], str(STANDIN), data, str(out), rounds=12,
                            seeds=(1,), progress=lambda m: None)
    a = doc["apis"][API]
    for arm in parity.ARMS:
        assert a[arm]["runs"] == 12, (arm, a[arm])
        assert a[arm]["up_pass_rate"] == (12 - a[arm]["invalid"]) / 12
        assert a[arm]["valid_per_s"] is not None and isinstance(a[arm]["crash_signatures"], list)
    d = a["ours_diff"]
    assert d["points"] == round(100 * (a["ours"]["up_pass_rate"] - a["upstream"]["up_pass_rate"]), 2)
    assert d["verdict"] == parity.verdict(d["points"], d["noise"])
    assert "no op_json" in doc["apis"]["tf.raw_ops.NotThere"]["skipped"]
    assert doc["pooled"]["ours"]["runs"] == 12 and doc["pooled"]["upstream"]["apis"] == 1
    # a reason is shown only where ours is more than 2 points below upstream
    assert parity.verdict(-1.5, 4) == "within 2 points" and parity.verdict(-3, 4) == "below, within noise"
    assert parity.verdict(-5, 4) == "below" and parity.verdict(0, 4) == "ours >= upstream"
    a["ours_diff"] = {"points": -9.0, "noise": 4.0, "verdict": "below"}
    md = parity.markdown(doc, {API: "upstream's op_json enum differs"})
    row = next(line for line in md.splitlines() if line.startswith(f"| {API} "))
    assert row.endswith("| -9.0 (4.0) | below | upstream's op_json enum differs |")
    assert "unexplained" in parity.markdown(doc, {})
    paths = parity.write(doc, str(out), {})
    assert json.loads(Path(paths[0]).read_text())["rounds"] == 12
    # a rerun into the same folder reuses the finished arms
    again = parity.run_parity([API], str(STANDIN), data, str(out), rounds=12, seeds=(1,),
                              progress=lambda m: (_ for _ in ()).throw(AssertionError(m)))
    assert again["runs"][API] == doc["runs"][API]


def test_parity_arms_are_claimed_so_two_processes_split_the_work(tmp_path):
    from acetest_ml.bench import parity
    path = str(tmp_path / "tf.raw_ops.BiasAdd.upstream.s2.json")
    assert parity._claim(path) and parity._claim(path)  # ours, and still ours
    (tmp_path / "tf.raw_ops.BiasAdd.upstream.s2.json.claim").write_text(str(os.getppid()))
    assert not parity._claim(path)  # a live process has it
    import subprocess
    import sys
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    (tmp_path / "tf.raw_ops.BiasAdd.upstream.s2.json.claim").write_text(str(gone.pid))
    assert parity._claim(path)  # its process is gone: taken over
    parity._release(path)
    assert not (tmp_path / "tf.raw_ops.BiasAdd.upstream.s2.json.claim").exists()


def test_the_invalid_run_cut_is_also_given_over_apis_with_a_normal_return():
    # upstream's pass counts an OOM: an API whose only "passes" are OOMs is in the
    # first cut's scope, not in the second's
    def row(runs, invalid, passed):
        return {"runs": runs, "invalid": invalid, "passed": passed, "seconds": 1.0}
    results = {"A": {"upstream": row(100, 60, 40), "up-online": row(100, 15, 85)},
               "B": {"upstream": row(100, 97, 0), "up-online": row(100, 97, 0)},
               "C": {"upstream": row(100, 100, 0), "up-online": row(100, 100, 0)}}
    p = scope.pooled(results, ("upstream", "up-online"))["up-online"]
    assert p["invalid_cut_apis"] == 2 and p["invalid_cut_normal_apis"] == 1
    assert abs(p["invalid_cut"] - (1 - 112 / 157)) < 1e-9
    assert abs(p["invalid_cut_normal"] - 0.75) < 1e-9
    md = scope.markdown({"rounds": 100, "seeds": {"train": 1, "eval": 2}, "apis": {},
                         "pooled": scope.pooled(results, ("upstream", "up-online"))}, ("upstream", "up-online"))
    assert "| up-online | 3 | 300 |" in md and "75.0% (1 APIs)" in md and "28.7% (2 APIs)" in md
