"""The benchmark report's scope tables (README's BENCH-TABLE is one of them)."""
import json

from acetest_ml.bench.report import learned_table, overall_table

from helpers import ROOT

RESULTS = ROOT / "benchmarks" / "results" / "20261121-075039" / "results.json"


def _cells(line):
    assert line.startswith("|") and line.endswith("|"), line
    return [c.strip() for c in line[1:-1].split("|")]


def test_overall_table_is_well_formed_markdown():
    r = json.loads(RESULTS.read_text())
    lines = overall_table(r).splitlines()
    header, sep, *rows = lines
    n = len(_cells(header))
    # a delimiter row with another cell count is not a table in GitHub markdown
    assert _cells(sep) == ["---"] * n
    assert [_cells(x)[0] for x in rows] == ["overall", "overall_all"]
    assert all(len(_cells(x)) == n for x in rows)
    o = r["overall"]
    row = dict(zip(_cells(header), _cells(rows[0])))
    assert row["APIs"] == str(o["n_apis"])
    assert row["baseline pass"] == f"{o['baseline_pass_rate'] * 100:.1f}%"
    assert row["lost sigs"] == str(len(o["lost_crash_signatures"]))


def test_learned_table_only_lists_scopes_with_learned_arms():
    r = json.loads(RESULTS.read_text())
    assert len(learned_table(r).splitlines()) == 2      # header and delimiter only
    o = r["overall_all"]
    o.update({k: 0.5 for k in ("learned_pass_rate", "learned_filter_pass_rate", "learned_valid_exec_per_s",
                                "learned_filter_valid_exec_per_s", "learned_filter_valid_ratio",
                                "learned_candidates_per_exec", "learned_filter_candidates_per_exec")},
             learned_valid_ratio=None, **{"learned_apis_valid_ge_0.8x": 3, "learned_filter_apis_valid_ge_0.8x": 4})
    header, sep, *rows = learned_table(r).splitlines()
    assert len(rows) == 1 and len(_cells(sep)) == len(_cells(header)) == len(_cells(rows[0]))
    assert _cells(rows[0])[0] == "overall_all"
    assert _cells(rows[0])[4] == "- / 0.50x"      # a missing ratio prints as '-'


def test_unknown_bench_arm_is_one_line_exit_2(capsys):
    from acetest_ml.bench.__main__ import main
    assert main(["--config", str(ROOT / "benchmarks" / "apis.yaml"), "--arms", "learned", "nosuch",
                 "--out", "unused"]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and "nosuch" in err[0]
