"""CampaignConfig validates itself; the CLI and the bench take their defaults
from it and turn a bad value into one line naming the option, exit 2."""
import math
import os
import subprocess
import sys

import pytest

from acetest_ml.campaign import CampaignConfig, run_campaign
from acetest_ml.cli import build_parser, main
from acetest_ml.errors import UserError
from acetest_ml.settings import DEFAULTS, SettingError

API = "tf.raw_ops.Add"

BAD = [
    ("budget", 0), ("budget", -3), ("budget", 2.5), ("budget", True),
    ("timeout", 0), ("timeout", -1.0), ("timeout", math.inf), ("timeout", math.nan), ("timeout", "10"),
    ("jobs", 0), ("exploration", -0.1), ("exploration", 1.5), ("exploration", math.nan),
    ("batch", 0), ("warmup", 0), ("retrain_every", 0), ("max_candidates_per_exec", 0),
    ("constraints", "smt"), ("ml_filter", "yes"), ("framework", "jax"), ("filter_policy", "fast"),
    ("mem_limit_mb", 0), ("seed", 1.5), ("resume", "no"),
    ("constraints_by_api", {API: "other"}), ("apis", []), ("apis", [""]),
]


@pytest.mark.parametrize("name,value", BAD)
def test_bad_setting_names_it(tmp_path, name, value):
    kw = {"apis": [API], "out": str(tmp_path / "c"), name: value}
    with pytest.raises(SettingError) as ei:
        CampaignConfig(**kw)
    assert ei.value.setting.split("[")[0] == name
    assert str(ei.value).startswith(name)
    assert "\n" not in str(ei.value)
    assert isinstance(ei.value, UserError)


def test_good_settings_pass(tmp_path):
    cfg = CampaignConfig(apis=[API], out=str(tmp_path / "c"), exploration=0.0, timeout=0.5,
                         ml_filter="online", constraints="acetest", mem_limit_mb=512)
    assert cfg.candidate_cap == max(cfg.budget * cfg.max_candidates_per_exec, cfg.budget + 100)


def test_out_is_a_file(tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(SettingError, match="file.txt is a file"):
        CampaignConfig(apis=[API], out=str(f))
    with pytest.raises(SettingError, match="is a file"):
        CampaignConfig(apis=[API], out=str(f / "sub"))


def test_revalidated_at_run(tmp_path):
    cfg = CampaignConfig(apis=[API], out=str(tmp_path / "c"))
    cfg.budget = 0
    with pytest.raises(SettingError, match="budget"):
        run_campaign(cfg, show_progress=False)
    assert not os.path.exists(tmp_path / "c")


def test_cli_defaults_are_the_settings_defaults():
    ns = build_parser().parse_args(["campaign", "--api", API, "--out", "x"])
    for name in ("budget", "seed", "constraints", "acetest_data", "rules", "timeout", "jobs",
                 "ml_filter", "models", "models_dir", "exploration", "batch", "warmup",
                 "retrain_every", "mem_limit_mb", "filter_policy"):
        assert getattr(ns, name) == DEFAULTS[name], name


def test_bench_defaults_are_the_settings_defaults(tmp_path):
    from acetest_ml.bench.protocol import load_bench_config
    p = tmp_path / "apis.yaml"
    p.write_text(f"registry_apis: [{API}]\n")
    cfg = load_bench_config(str(p))
    assert (cfg.timeout, cfg.jobs, cfg.exploration, cfg.models) == (
        DEFAULTS["timeout"], DEFAULTS["jobs"], DEFAULTS["exploration"], DEFAULTS["models"])
    p.write_text(f"registry_apis: [{API}]\ntimeout: 0\n")
    with pytest.raises(UserError, match="apis.yaml: timeout"):
        load_bench_config(str(p))


def _one_error_line(stderr: str) -> str:
    lines = [l for l in stderr.strip().splitlines() if l.strip()]
    assert len(lines) == 1, lines
    assert "Traceback" not in stderr
    return lines[0]


@pytest.mark.parametrize("extra,option", [
    (["--timeout", "0"], "--timeout"), (["--timeout", "inf"], "--timeout"),
    (["--budget", "0"], "--budget"), (["--jobs", "0"], "--jobs"),
    (["--exploration", "2"], "--exploration"), (["--batch", "0"], "--batch"),
    (["--mem-limit-mb", "0"], "--mem-limit-mb"), (["--retrain-every", "0"], "--retrain-every"),
])
def test_cli_bad_number_one_line(tmp_path, capsys, extra, option):
    rc = main(["campaign", "--api", API, "--out", str(tmp_path / "c"), "--no-progress"] + extra)
    assert rc == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith(f"acetest-ml: error: {option}:"), line
    assert not os.path.exists(tmp_path / "c")


def test_cli_out_names_a_file_subprocess(tmp_path):
    f = tmp_path / "taken"
    f.write_text("keep me")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-m", "acetest_ml.cli", "campaign", "--api", API,
                        "--budget", "2", "--out", str(f), "--no-progress"],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2
    line = _one_error_line(r.stderr)
    assert line.startswith("acetest-ml: error: --out:") and "taken" in line
    assert f.read_text() == "keep me"
    r = subprocess.run([sys.executable, "-m", "acetest_ml.cli", "campaign", "--api", API,
                        "--timeout", "0", "--out", str(tmp_path / "c"), "--no-progress"],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2
    assert _one_error_line(r.stderr).startswith("acetest-ml: error: --timeout:")
