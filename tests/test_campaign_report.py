"""`acetest-ml report DIR` on a real campaign: an API with valid runs, one
that is never valid (a rule forces a 3-d operand on mm), one the worker
refuses to call; the report's figures must agree with the store."""
import os
import sqlite3

import numpy as np
import pytest

from acetest_ml.campaign_report import build, throughput
from acetest_ml.cli import main
from acetest_ml.store import Store

APIS = ["torch.ops.aten.add.Tensor", "torch.ops.aten.mm", "torch.ops.aten.__and__.Scalar"]


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    rules = root / "rules.yaml"
    rules.write_text("rules:\n  torch.ops.aten.mm:\n    - self.rank == 3\n")
    out = str(root / "c")
    args = ["campaign", "--budget", "12", "--seed", "3", "--out", out, "--no-progress",
            "--jobs", "1", "--rules", str(rules)]
    for a in APIS:
        args += ["--api", a]
    assert main(args) == 0
    return out


def test_report_figures_agree_with_the_store(campaign, capsys):
    assert main(["report", campaign]) == 0
    printed = capsys.readouterr().out
    md_path = os.path.join(campaign, "report.md")
    png_path = os.path.join(campaign, "throughput.png")
    assert md_path in printed and png_path in printed
    md = open(md_path).read()
    db = sqlite3.connect(os.path.join(campaign, "runs.sqlite"))
    executed = db.execute("SELECT COUNT(*) FROM candidates WHERE outcome IN "
                          "('pass','invalid','crash','timeout')").fetchone()[0]
    passed = db.execute("SELECT COUNT(*) FROM candidates WHERE outcome = 'pass'").fetchone()[0]
    mm_pass = db.execute("SELECT COUNT(*) FROM candidates WHERE api = 'torch.ops.aten.mm'"
                         " AND outcome = 'pass'").fetchone()[0]
    db.close()
    assert executed == 24 and 0 < passed and mm_pass == 0
    assert f"executed runs: {executed}, valid (pass): {passed}" in md
    # coverage: add passed, mm never (its top error grouped), the dunder skipped
    assert "1 of 3 APIs had at least one valid run" in md
    rows = {ln.split("|")[1].strip(): ln for ln in md.splitlines()
            if ln.startswith("| torch.ops.aten.")}
    assert set(rows) == set(APIS)
    assert "| skipped |" in rows["torch.ops.aten.__and__.Scalar"]
    assert "| 12 |" in rows["torch.ops.aten.mm"] and "| 0.0% |" in rows["torch.ops.aten.mm"]
    groups = [ln for ln in md.splitlines() if "torch.ops.aten.mm" in ln and ln.startswith("| invalid:")]
    assert len(groups) == 1 and "| 1 |" in groups[0], md
    skipped = [ln for ln in md.splitlines() if ln.startswith("| skipped:")]
    assert len(skipped) == 1 and "__and__" in skipped[0]
    # the plot is a real image with drawn content, not a blank canvas
    import matplotlib.image as mpimg
    img = mpimg.imread(png_path)
    assert img.ndim == 3 and img.shape[0] > 100 and len(np.unique(img.reshape(-1, img.shape[2]), axis=0)) > 5


def test_throughput_bins_count_every_executed_run(campaign):
    with Store(campaign, create=False) as store:
        tp = throughput(store, bins=7)
    assert len(tp) == 7
    assert sum(b["executed"] for b in tp) == 24
    rep = build(campaign)
    assert sum(b["valid"] for b in tp) == rep["summary"]["overall"]["passed"]
    assert [b["t"] for b in tp] == sorted(b["t"] for b in tp)


def test_report_on_bad_folders_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["report", str(tmp_path / "missing")]) == 2
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    (tmp_path / "afile").write_text("x")
    assert main(["report", str(tmp_path / "afile")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(ln.startswith("acetest-ml: error:") for ln in err), err
    assert "Traceback" not in "".join(err)
