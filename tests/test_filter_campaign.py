"""--ml-filter on real campaigns: offline models trained from a campaign's
store, and the online mode that learns during the campaign."""
import json
import os

import pytest
import yaml

from acetest_ml.cli import main
from acetest_ml.bench.protocol import registry_copy
from acetest_ml.model import safe_name
from acetest_ml.settings import DEFAULT_MODELS

from helpers import candidates

API = "tf.raw_ops.Add"  # broadcasting rules: both outcomes are common


def _models_yaml(tmp_path):
    """The shipped registry without per-API entries; models in ./models beside it."""
    return registry_copy(DEFAULT_MODELS, str(tmp_path), models_dir="models")


def _rows(out):
    return candidates(out, "idx, decision, score, outcome", order="idx")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("filter")
    models = _models_yaml(tmp)
    train_out = str(tmp / "train")
    assert main(["campaign", "--api", API, "--budget", "120", "--seed", "0", "--out", train_out,
                 "--no-progress"]) == 0
    assert main(["train", "--runs", train_out, "--models", models]) == 0
    return tmp, models, train_out


def test_train_writes_lightgbm_text_model_and_sidecar(trained):
    tmp, models, _ = trained
    files = os.listdir(tmp / "models")
    side = [f for f in files if f.endswith(".json")]
    assert len(side) == 1 and any(f.endswith(".model.txt") for f in files)
    meta = json.load(open(tmp / "models" / side[0]))
    assert meta["api"] == API and meta["kind"] == "lightgbm"
    assert (tmp / "models" / meta["model_file"]).is_file()
    assert 0.0 < meta["threshold"] < 1.0  # "auto": chosen from out-of-fold scores
    # the counts are the training campaign's labels, and the schema is the
    # one the API's spec gives (a model for other features would be refused)
    from acetest_ml.features import FeatureSchema
    from acetest_ml.store import Store
    from acetest_ml.train import datasets
    with Store(trained[2], create=False) as st:
        ds = datasets(st)[API]
    assert (meta["counts"]["valid"], meta["counts"]["invalid"]) == (ds.n_valid, ds.n_invalid)
    assert meta["schema"] == FeatureSchema.for_spec(ds.spec).to_json()
    # the saved model separates its own training data better than chance
    from acetest_ml.classify import ValidityModel
    m = ValidityModel.load(tmp / "models" / side[0], ds.spec)
    assert m.evaluate(ds.inputs, ds.labels)["balanced_accuracy"] > 0.7


def test_filtered_campaign_runs_budget_and_records_every_decision(trained, capsys):
    tmp, models, train_out = trained
    out = str(tmp / "filtered")
    assert main(["campaign", "--api", API, "--budget", "40", "--seed", "1", "--out", out,
                 "--ml-filter", "--models", models, "--exploration", "0.1", "--no-progress"]) == 0
    rows = _rows(out)
    executed = [r for r in rows if r[3] in ("pass", "invalid", "crash", "timeout")]
    assert len(executed) == 40  # the budget counts executed inputs
    assert all(r[1] in ("accept", "explore", "discard") and r[2] is not None for r in rows)
    assert all(r[3] is None for r in rows if r[1] == "discard")
    # decisions follow the scores: accepted at or above the threshold, the rest below
    thr = json.load(open(tmp / "models" / f"{safe_name(API)}.json"))["threshold"]
    assert all(r[2] >= thr for r in rows if r[1] == "accept")
    assert all(r[2] < thr for r in rows if r[1] in ("explore", "discard"))
    assert all(0.0 <= r[2] <= 1.0 for r in rows)
    # exploration: counted on the explore rows, each of them executed, and at
    # most the --exploration share of the executed runs (the rule admits one
    # exploration run while explored < 0.1 * (executed + 1))
    explore = [r for r in rows if r[1] == "explore"]
    assert all(r[3] is not None for r in explore)
    assert len(explore) <= 0.1 * (len(executed) + 1)
    s = json.load(open(os.path.join(out, "summary.json")))["apis"][API]
    f = s["filter"]
    assert f["mode"] == "offline" and f["candidates"] == len(rows) >= 40
    assert f["discarded"] == sum(1 for r in rows if r[1] == "discard")
    assert f["explored"] == len(explore)
    assert f["explore_share"] == pytest.approx(len(explore) / len(executed))
    if explore:
        assert f["est_false_discard_rate"] == pytest.approx(
            sum(1 for r in explore if r[3] == "pass") / len(explore))
    assert f["score_us_per_candidate"] > 0
    base = json.load(open(os.path.join(train_out, "summary.json")))["apis"][API]["pass_rate"]
    assert f["accepted_pass_rate"] >= base  # the filter keeps the likely-valid inputs
    # held-out evaluation of the same model on the filtered run's labels
    capsys.readouterr()
    assert main(["eval", "--runs", out, "--models", models, "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)[API]
    assert rep["status"] == "evaluated"
    assert rep["n"] == sum(1 for r in executed if r[3] in ("pass", "invalid", "crash", "timeout"))
    assert rep["balanced_accuracy"] > 0.6  # held out (seed 1 vs seed 0), still better than chance


def test_rate_policy_runs_cheap_predicted_invalid_inputs(trained):
    """--filter-policy rate on the same model and seed: the input stream is the
    same; predicted-invalid inputs that score at least valid rate x invalid-run
    time are executed (decision cheap) instead of discarded, so fewer
    candidates are drawn per executed run; accepted ones stay accepted."""
    tmp, models, _ = trained
    common = ["campaign", "--api", API, "--budget", "60", "--seed", "5", "--ml-filter",
              "--models", models, "--exploration", "0", "--no-progress"]
    score, rate = str(tmp / "policy-score"), str(tmp / "policy-rate")
    assert main(common + ["--out", score]) == 0
    assert main(common + ["--out", rate, "--filter-policy", "rate"]) == 0
    a, b = _history(score), _history(rate)
    n = min(len(a), len(b))
    assert [r[1] for r in a[:n]] == [r[1] for r in b[:n]]  # candidate i is the same input
    thr = json.load(open(tmp / "models" / f"{safe_name(API)}.json"))["threshold"]
    cheap = [r for r in b if r[2] == "cheap"]
    assert cheap and all(r[3] < thr and r[4] is not None for r in cheap)
    for x, y in zip(a[:n], b[:n]):  # rate only turns discards into runs
        assert (x[2] == "accept") == (y[2] == "accept")
        if y[2] == "discard":
            assert x[2] == "discard"
    f = {p: json.load(open(os.path.join(o, "summary.json")))["apis"][API]["filter"]
         for p, o in (("score", score), ("rate", rate))}
    assert f["score"]["policy"] == "score" and f["score"]["cheap_runs"] == 0
    assert f["rate"]["policy"] == "rate" and f["rate"]["cheap_runs"] == len(cheap)
    assert f["rate"]["rate"]["t_invalid_ms"] > 0 and f["rate"]["rate"]["valid_rate"] > 0
    assert f["rate"]["candidates_per_exec"] < f["score"]["candidates_per_exec"]


def test_rate_gate_arithmetic():
    from acetest_ml.filter import RateGate
    from acetest_ml.outcome import Outcome
    g = RateGate(passes=9, elapsed=4.0)  # (9 + 1) passes / (4 + 1) s: 2 valid runs per second
    # no invalid run timed yet: the first rejected candidate and every 16th runs to time one
    assert [g.worth(0.01, 0.0) for _ in range(33)] == [i % 16 == 0 for i in range(33)]
    g.let_through = 0
    g.observe(Outcome.INVALID, 0.05)
    g.observe(Outcome.INVALID, 0.15)  # mean 0.1 s per invalid run
    assert g.t_invalid == pytest.approx(0.1)
    assert g.rate(0.0) == pytest.approx(2.0)
    assert g.worth(0.21, 0.0) and not g.worth(0.19, 0.0)  # worth it from 2 x 0.1 = 0.2
    g.observe(Outcome.PASS, 0.01)  # passes count; their time does not move t_invalid
    assert g.passes == 10 and g.t_invalid == pytest.approx(0.1)
    assert not g.worth(None, 0.0) and g.let_through == 1
    # accepted inputs that fail get further and cost more: once 3 runs the
    # model did not accept are timed, those set the time
    g.observe(Outcome.INVALID, 0.7, accepted=True)
    assert g.t_invalid == pytest.approx(0.3)  # (0.05 + 0.15 + 0.7) / 3, all runs
    for _ in range(3):
        g.observe(Outcome.INVALID, 0.01, accepted=False)
    assert g.t_invalid == pytest.approx((0.05 + 0.15 + 3 * 0.01) / 5)  # the accepted one left out


def test_swapping_kind_in_yaml_changes_the_model(trained):
    tmp, models, train_out = trained
    doc = yaml.safe_load(open(models))
    doc["default"]["kind"] = "hist_gb"
    doc["models_dir"] = "models_hgb"
    alt = tmp / "models_hgb.yaml"
    alt.write_text(yaml.safe_dump(doc))
    assert main(["train", "--runs", train_out, "--models", str(alt)]) == 0
    files = os.listdir(tmp / "models_hgb")
    assert any(f.endswith(".pkl") for f in files) and not any(f.endswith(".model.txt") for f in files)


def test_no_model_falls_back_to_online(tmp_path):
    models = _models_yaml(tmp_path)  # empty models dir
    out = str(tmp_path / "c")
    assert main(["campaign", "--api", API, "--budget", "70", "--seed", "2", "--out", out, "--ml-filter",
                 "--models", models, "--warmup", "40", "--no-progress"]) == 0
    rows = _rows(out)
    assert [r[1] for r in rows[:40]] == ["warmup"] * 40
    later = rows[40:]
    assert later and all(r[2] is not None for r in later)  # online model scores after warm-up
    f = json.load(open(os.path.join(out, "summary.json")))["apis"][API]["filter"]
    assert f["mode"] == "online" and "no model" in f["note"] and f["retrains"] >= 1


def test_train_kind_hist_gb_uses_its_own_params(trained, capsys):
    """``train --kind hist_gb`` under a LightGBM default trains (it used to pass
    LightGBM's num_iterations to scikit-learn and end in a traceback)."""
    tmp, models, train_out = trained
    capsys.readouterr()
    assert main(["train", "--runs", train_out, "--models", models, "--kind", "hist_gb",
                 "--models-dir", str(tmp / "hgb_cli")]) == 0
    out = capsys.readouterr().out
    assert "hist_gb" in out and "1 of 1 APIs trained" in out
    side = json.load(open(tmp / "hgb_cli" / f"{safe_name(API)}.json"))
    assert side["kind"] == "hist_gb"
    assert any(f.endswith(".pkl") for f in os.listdir(tmp / "hgb_cli"))


def _cli(args, cwd):
    import subprocess
    import sys
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="0", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "acetest_ml.cli"] + args, cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def test_default_registry_works_outside_the_repository(trained, tmp_path):
    """From a folder outside the repository and without --models: train puts
    the model into ./models (created on demand), campaign --ml-filter and eval
    find it there; the framework's start-up lines stay out of stderr."""
    _, _, train_out = trained
    r = _cli(["train", "--runs", train_out], tmp_path)
    assert r.returncode == 0, r.stderr
    assert os.path.isfile(tmp_path / "models" / f"{safe_name(API)}.json")
    r = _cli(["campaign", "--api", API, "--budget", "20", "--seed", "3", "--out", "c",
              "--ml-filter", "--no-progress"], tmp_path)
    assert r.returncode == 0, r.stderr
    f = json.load(open(tmp_path / "c" / "summary.json"))["apis"][API]["filter"]
    assert f["mode"] == "offline"
    assert os.path.realpath(f["model"]) == os.path.realpath(tmp_path / "models" / f"{safe_name(API)}.json")
    assert r.stderr.strip() == "", r.stderr  # no TF start-up noise, no warnings
    r = _cli(["eval", "--runs", "c", "--json"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)[API]["status"] == "evaluated"


def _history(out):
    return candidates(out, "idx, input, decision, score, outcome", order="idx")


def test_resumed_filtered_campaign_equals_an_uninterrupted_one(trained):
    """An offline-filtered campaign stopped after 12 runs and resumed to 24
    records exactly what one uninterrupted 24-run campaign records."""
    tmp, models, _ = trained
    common = ["campaign", "--api", API, "--seed", "4", "--ml-filter", "--models", models,
              "--exploration", "0.1", "--no-progress"]
    whole, part = str(tmp / "whole"), str(tmp / "part")
    assert main(common + ["--budget", "24", "--out", whole]) == 0
    assert main(common + ["--budget", "12", "--out", part]) == 0
    first = _history(part)
    assert main(common + ["--budget", "24", "--out", part, "--resume"]) == 0
    again = _history(part)
    assert again[:len(first)] == first  # nothing recorded is lost or rewritten
    assert [r[0] for r in again] == list(range(len(again)))
    assert again == _history(whole)
    assert {r[2] for r in again} >= {"accept", "discard"}


def test_resumed_online_campaign_keeps_its_labels(tmp_path):
    """An online campaign resumed after its warm-up learns from the recorded
    runs at once: no second warm-up, every label counted once."""
    models = _models_yaml(tmp_path)
    out = str(tmp_path / "online")
    common = ["campaign", "--api", API, "--seed", "6", "--ml-filter", "online", "--models", models,
              "--warmup", "30", "--retrain-every", "1000", "--out", out, "--no-progress"]
    assert main(common + ["--budget", "40"]) == 0
    first = _history(out)
    assert [r[2] for r in first[:30]] == ["warmup"] * 30
    assert main(common + ["--budget", "60", "--resume"]) == 0
    rows = _history(out)
    assert rows[:len(first)] == first
    later = rows[len(first):]
    assert later and all(r[2] in ("accept", "explore", "discard") and r[3] is not None for r in later)
    executed = [r for r in rows if r[4] in ("pass", "invalid", "crash", "timeout")]
    assert len(executed) == 60
    f = json.load(open(os.path.join(out, "summary.json")))["apis"][API]["filter"]
    assert f["mode"] == "online" and f["labels"] == 60 and f["retrains"] >= 1
