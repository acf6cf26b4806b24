"""Bug folders, `crashes`, `replay` and `minimize` on a real TensorFlow crash:
LSTMBlockCell with a rank-1 x fails a CHECK in TF 2.21 (the rules of
helpers.CRASH_RULES make every generated input hit it)."""
import json
import os
import shutil

import pytest

from acetest_ml.cli import main
from acetest_ml.execute.supervisor import RunResult
from acetest_ml.model import AbstractInput, ApiSpec, TensorDesc
from acetest_ml.triage import BUG_FILE, list_bugs, record_bug

from helpers import CRASH_API, CRASH_RULES, candidates, needs_tf_crash

# one worker runs the module (its campaign fixture is shared)
pytestmark = [needs_tf_crash, pytest.mark.xdist_group("triage")]


def _crash_rows(out):
    return candidates(out, "seed, idx, signature", where="outcome = 'crash'", order="idx")


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    d = tmp_path_factory.mktemp("triage")
    rules = d / "rules.yaml"
    rules.write_text(CRASH_RULES)
    out = str(d / "c")
    rc = main(["campaign", "--api", CRASH_API, "--budget", "3", "--seed", "1",
               "--out", out, "--no-progress", "--jobs", "1", "--rules", str(rules)])
    assert rc == 0
    return out, str(rules)


def _folder(out):
    bugs = os.listdir(os.path.join(out, "bugs"))
    assert len(bugs) == 1
    return os.path.join(out, "bugs", bugs[0])


def test_crashes_with_one_signature_make_one_bug_folder(campaign):
    out, _ = campaign
    crashes = _crash_rows(out)
    assert len(crashes) == 3 and len({c[2] for c in crashes}) == 1
    folder = _folder(out)
    bug = json.load(open(os.path.join(folder, BUG_FILE)))
    assert bug["signature"] == crashes[0][2] and "Check failed" in bug["signature"]
    assert bug["api"] == CRASH_API and bug["outcome"] == "crash"
    assert bug["count"] == 3 and sorted(bug["runs"]) == [[s, i] for s, i, _ in crashes]
    assert bug["first_run"] == {"seed": crashes[0][0], "idx": crashes[0][1]}
    assert bug["versions"]["framework_version"].startswith("2.") and bug["versions"]["numpy"]
    assert "Check failed" in bug["stderr_tail"] and bug["message"].startswith("worker died")
    ai = AbstractInput.from_json(json.load(open(os.path.join(folder, "input.json"))))
    assert all(ai.args[a].rank == 1 for a in ("x", "cs_prev", "w", "b"))
    script = open(os.path.join(folder, "reproducer.py")).read()
    assert "tf.raw_ops.LSTMBlockCell" in script and "acetest_ml" not in script.replace("acetest-ml", "")
    assert not os.path.exists(os.path.join(out, "crashes"))  # one place for crashes


def test_crashes_command_lists_the_bug(campaign, capsys):
    out, _ = campaign
    capsys.readouterr()
    assert main(["crashes", out, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert len(listed) == 1
    b = listed[0]
    assert b["api"] == CRASH_API and b["count"] == 3 and "Check failed" in b["signature"]
    assert os.path.samefile(b["folder"], _folder(out))
    assert main(["crashes", out]) == 0
    text = capsys.readouterr().out
    assert CRASH_API in text and "1 unique signature" in text
    # bad input: exit 2 with one line
    assert main(["crashes", os.path.join(out, "runs.sqlite")]) == 2
    assert main(["crashes", os.path.join(out, "logs")]) == 2


def test_replay_reproduces_and_detects_a_fixed_input(campaign, tmp_path, capsys):
    out, _ = campaign
    folder = _folder(out)
    assert main(["replay", folder]) == 0
    assert capsys.readouterr().out.startswith("reproduced: crash: ")
    # the same folder with an input that no longer crashes (a well-formed
    # LSTMBlockCell: batch 1, input size 2, cell size 3)
    fixed = str(tmp_path / "fixed")
    shutil.copytree(folder, fixed)
    ai = AbstractInput.from_json(json.load(open(os.path.join(fixed, "input.json"))))
    shapes = {"x": (1, 2), "cs_prev": (1, 3), "h_prev": (1, 3), "w": (5, 12),
              "wci": (3,), "wcf": (3,), "wco": (3,), "b": (12,)}
    ai.args.update({a: TensorDesc("float32", s) for a, s in shapes.items()})
    with open(os.path.join(fixed, "input.json"), "w") as f:
        json.dump(ai.to_json(), f)
    assert main(["replay", fixed]) == 1
    assert capsys.readouterr().out.startswith("not reproduced: pass")
    # bad input: exit 2
    assert main(["replay", str(tmp_path / "missing")]) == 2
    with open(os.path.join(fixed, BUG_FILE), "w") as f:
        f.write("{not json")
    assert main(["replay", fixed]) == 2


def test_minimize_keeps_the_signature_and_shrinks(campaign, capsys):
    out, _ = campaign
    folder = _folder(out)
    assert main(["minimize", folder, "--max-runs", "40"]) == 0
    bug = json.load(open(os.path.join(folder, BUG_FILE)))
    rec = bug["minimized"]
    assert rec and rec["signature"] == bug["signature"] and rec["runs"] <= 41
    before = AbstractInput.from_json(json.load(open(os.path.join(folder, "input.json"))))
    after = AbstractInput.from_json(json.load(open(os.path.join(folder, rec["input"]))))
    assert set(after.args) <= set(before.args)
    shrunk = False
    for name, t in before.tensors().items():
        m = after.tensors()[name]
        assert m.rank <= t.rank and m.numel <= t.numel
        assert max(m.shape, default=0) <= max(t.shape, default=0)
        shrunk |= m.shape != t.shape
    assert shrunk or rec["elements_after"] == rec["elements_before"]
    assert rec["elements_after"] <= rec["elements_before"]
    assert os.path.exists(os.path.join(folder, rec["reproducer"]))
    # independently: the minimised input still crashes the same way in a fresh worker
    capsys.readouterr()
    assert main(["replay", folder, "--minimized"]) == 0


def test_resume_does_not_duplicate_bug_folders(campaign, tmp_path):
    out, rules = campaign
    copy = str(tmp_path / "c")
    shutil.copytree(out, copy)
    folder = _folder(copy)
    bug = json.load(open(os.path.join(folder, BUG_FILE)))
    # a run filed again (campaign killed after the folder was written, before
    # the store committed the run) is not counted twice
    spec = ApiSpec.from_dict(bug["spec"])
    ai = AbstractInput.from_json(json.load(open(os.path.join(folder, "input.json"))))
    seed, idx = bug["runs"][0]
    res = RunResult(outcome="crash", signature=bug["signature"], message=bug["message"])
    assert record_bug(copy, spec, ai, res, seed=seed, idx=idx) == folder
    assert json.load(open(os.path.join(folder, BUG_FILE)))["count"] == 3
    # a resumed campaign adds its new crashes to the same folder
    rc = main(["campaign", "--api", CRASH_API, "--budget", "5", "--seed", "1",
               "--out", copy, "--no-progress", "--jobs", "1", "--rules", rules, "--resume"])
    assert rc == 0
    crashes = _crash_rows(copy)
    bugs = list_bugs(copy)
    assert len(crashes) == 5 and len(bugs) == 1 and bugs[0]["count"] == 5
    assert sorted(json.load(open(os.path.join(folder, BUG_FILE)))["runs"]) == \
        [[s, i] for s, i, _ in crashes]


def test_bad_bug_folders_are_one_line_errors(tmp_path, capsys):
    capsys.readouterr()
    assert main(["minimize", str(tmp_path / "nope")]) == 2
    (tmp_path / "empty").mkdir()
    assert main(["minimize", str(tmp_path / "empty")]) == 2
    assert main(["replay", str(tmp_path / "empty")]) == 2
    assert main(["crashes", str(tmp_path / "empty")]) == 2
    (tmp_path / "f").write_text("x")
    assert main(["minimize", str(tmp_path / "f"), "--max-runs", "0"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line]
    assert len(err) == 5 and all(line.startswith("acetest-ml: error: ") for line in err)
