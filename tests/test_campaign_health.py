"""What a campaign records for inputs that never reach the API, and how it
reports an API that stops at the candidate cap. Real torch worker, real Z3;
only the spec source is replaced by hand-built specs."""
import json
import os
import sqlite3

import pytest

from acetest_ml import campaign as campaign_mod
from acetest_ml.campaign import CampaignConfig, run_campaign
from acetest_ml.model import ApiSpec, ArgSpec
from acetest_ml.outcome import ApiStatus, Outcome
from acetest_ml.summary import format_table

# torch has no such op: building the call fails in torch (the framework's verdict)
NO_OP = ApiSpec("torch.ops.aten.no_such_op_here", "torch",
                [ArgSpec("self", "tensor", dtypes=["float32"], min_rank=1, max_rank=2)])
# a string tensor for torch: our own conversion code raises (a bug of ours)
STRING_NEG = ApiSpec("torch.ops.aten.neg", "torch",
                     [ArgSpec("self", "tensor", dtypes=["string"], min_rank=1, max_rank=2)])
SPECS = {s.name: s for s in (NO_OP, STRING_NEG)}


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    mp = pytest.MonkeyPatch()

    # the driver hands each API's spec to its candidate process (registry
    # constraints are then built from it there)
    mp.setattr(campaign_mod, "spec_hint", lambda cfg, api: SPECS[api])
    out = str(tmp_path_factory.mktemp("health") / "c")
    cfg = CampaignConfig(apis=list(SPECS), out=out, budget=1, seed=0, jobs=1,
                         max_candidates_per_exec=1)
    try:
        summary = run_campaign(cfg, show_progress=False)
    finally:
        mp.undo()
    db = sqlite3.connect(os.path.join(out, "runs.sqlite"))
    rows = db.execute("SELECT api, idx, decision, outcome, exc_type, message FROM candidates"
                      " ORDER BY api, idx").fetchall()
    db.close()
    return cfg, summary, rows


def test_skipped_at_materialise_is_recorded_not_executed(campaign):
    cfg, summary, rows = campaign
    mine = [r for r in rows if r[0] == NO_OP.name]
    assert len(mine) == cfg.candidate_cap  # every candidate recorded, none executed
    assert [r[1] for r in mine] == list(range(cfg.candidate_cap))
    assert {r[3] for r in mine} == {Outcome.SKIPPED}
    assert all("no_such_op_here" in (r[5] or "") for r in mine)
    s = summary["apis"][NO_OP.name]
    assert s["executed"] == 0 and s["skipped_inputs"] == cfg.candidate_cap
    assert s["internal_errors"] == 0


def test_internal_errors_are_counted_apart(campaign):
    cfg, summary, rows = campaign
    mine = [r for r in rows if r[0] == STRING_NEG.name]
    assert len(mine) == cfg.candidate_cap
    assert {r[3] for r in mine} == {Outcome.INTERNAL}
    assert all(r[4] == "builtins.TypeError" and "internal error at acetest_ml/" in r[5] for r in mine)
    s = summary["apis"][STRING_NEG.name]
    assert s["internal_errors"] == cfg.candidate_cap and s["skipped_inputs"] == 0
    assert s["executed"] == 0
    assert "torch has no string" in s["internal_error_examples"][0][0]
    assert summary["overall"]["internal_errors"] == cfg.candidate_cap
    assert "internal errors" in format_table(summary)


def test_candidate_cap_is_a_health_problem(campaign):
    cfg, summary, _ = campaign
    for api in SPECS:
        s = summary["apis"][api]
        assert s["status"] == ApiStatus.UNHEALTHY and s["health"] == "filter_too_much"
        assert f"candidate cap reached: {cfg.candidate_cap} candidates" in s["reason"]
    assert summary["overall"]["apis_unhealthy"] == sorted(SPECS)
    table = format_table(summary)
    assert table.count("UNHEALTHY filter_too_much") == 2
    on_disk = json.load(open(os.path.join(cfg.out, "summary.json")))
    assert on_disk["apis"][NO_OP.name]["health"] == "filter_too_much"


def test_healthy_api_says_ok(tmp_path):
    from acetest_ml.store import Store
    from acetest_ml.summary import summarize
    with Store(str(tmp_path)) as st:
        st.set_api_status("x", ApiStatus.DONE, None, {"health": "ok", "elapsed": 1.0})
        from acetest_ml.model import AbstractInput
        st.add("x", 0, 0, AbstractInput("x", {}), outcome=Outcome.PASS)
        s = summarize(st)
    assert s["apis"]["x"]["health"] == "ok" and s["overall"]["apis_unhealthy"] == []
    assert "UNHEALTHY" not in format_table(s)
