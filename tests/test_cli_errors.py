"""Bad input ends as one line on stderr and exit code 2, never a traceback."""
import os
import subprocess
import sys

import pytest

from acetest_ml.cli import main

ENV = dict(os.environ, OMP_NUM_THREADS="1", TF_CPP_MIN_LOG_LEVEL="3")


def _err(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    err = [l for l in err if l.startswith("acetest-ml:")]
    assert len(err) == 1, err
    return err[0]


def test_unknown_api_exit_2_subprocess(tmp_path):
    r = subprocess.run([sys.executable, "-m", "acetest_ml.cli", "campaign", "--api", "tf.raw_ops.Conv2d",
                        "--budget", "5", "--out", str(tmp_path / "x"), "--no-progress"],
                       env=ENV, capture_output=True, text=True)
    assert r.returncode == 2
    lines = [l for l in r.stderr.splitlines() if l.startswith("acetest-ml")]
    assert len(lines) == 1 and "Conv2d" in lines[0] and "Conv2D" in lines[0]  # suggestion
    assert "Traceback" not in r.stderr
    assert not os.path.exists(tmp_path / "x" / "runs.sqlite")


def test_unknown_torch_api(tmp_path, capsys):
    assert main(["campaign", "--api", "torch.ops.aten.no_such_op", "--out", str(tmp_path / "x")]) == 2
    assert "no_such_op" in _err(capsys)


def test_broken_rules_yaml(tmp_path, capsys):
    bad = tmp_path / "rules.yaml"
    bad.write_text("rules:\n  tf.raw_ops.Add: [x.rank ==\n")
    assert main(["campaign", "--api", "tf.raw_ops.Add", "--rules", str(bad), "--out",
                 str(tmp_path / "x")]) == 2
    assert "rules.yaml" in _err(capsys)


def test_broken_models_yaml(tmp_path, capsys):
    bad = tmp_path / "models.yaml"
    bad.write_text("default:\n  kind: no_such_kind\n")
    assert main(["campaign", "--api", "tf.raw_ops.Add", "--ml-filter", "--models", str(bad), "--out",
                 str(tmp_path / "x")]) == 2
    msg = _err(capsys)
    assert "models.yaml" in msg and "kind" in msg


def test_missing_acetest_data(tmp_path, capsys):
    assert main(["campaign", "--constraints", "acetest", "--acetest-data", str(tmp_path / "nope"),
                 "--api", "tf.raw_ops.Conv2D", "--out", str(tmp_path / "x")]) == 2
    assert "nope" in _err(capsys)


def test_missing_api_file(tmp_path, capsys):
    assert main(["campaign", "--api-file", str(tmp_path / "apis.txt"), "--out", str(tmp_path / "x")]) == 2
    assert "apis.txt" in _err(capsys)


def test_train_on_missing_campaign(tmp_path, capsys):
    assert main(["train", "--runs", str(tmp_path / "none")]) == 2
    assert "no results store" in _err(capsys)


def test_corrupt_model_file(tmp_path, capsys):
    side = tmp_path / "m.json"
    side.write_text("{not json")
    os.makedirs(tmp_path / "runs")
    from acetest_ml.store import Store
    Store(str(tmp_path / "runs")).close()
    assert main(["eval", "--runs", str(tmp_path / "runs"), "--model", str(side)]) == 2
    assert "m.json" in _err(capsys)


def test_specs_command(capsys):
    assert main(["specs", "--api", "tf.raw_ops.Conv2D"]) == 0
    out = capsys.readouterr().out
    assert '"strides"' in out and '"padding"' in out
    assert main(["specs", "--framework", "torch"]) == 0
    out = capsys.readouterr().out
    assert "supported /" in out and "unsupported:" in out


def test_corrupt_saved_model_stops_a_filtered_campaign_before_it_runs(tmp_path, capsys):
    # a model file the registry points at that cannot be read is the user's
    # problem: one line naming it, exit 2, nothing run or recorded (it was an
    # API recorded as failing in our code, exit 0)
    from acetest_ml.bench.protocol import registry_copy
    from acetest_ml.model import safe_name
    from acetest_ml.settings import DEFAULT_MODELS
    models = registry_copy(DEFAULT_MODELS, str(tmp_path), models_dir="models")
    (tmp_path / "models").mkdir()
    side = tmp_path / "models" / f"{safe_name('tf.raw_ops.Add')}.json"
    side.write_text("{not json")
    out = tmp_path / "c"
    assert main(["campaign", "--api", "tf.raw_ops.Add", "--budget", "2", "--ml-filter", "--models", models,
                 "--out", str(out), "--no-progress"]) == 2
    lines = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("acetest-ml: error:") and side.name in lines[0], lines
    assert not out.exists()
    # online mode never reads saved models: the same registry runs
    assert main(["campaign", "--api", "tf.raw_ops.Add", "--budget", "2", "--ml-filter", "online",
                 "--models", models, "--out", str(out), "--no-progress"]) == 0
