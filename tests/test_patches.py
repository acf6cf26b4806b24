"""``patches/``: the start-up loader that puts the filter into upstream's own
``python main.py`` (run here on the stand-in Tester in a subprocess)."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

from acetest_ml.settings import DEFAULT_MODELS
from acetest_ml.upstream import activate, hook, runner

REPO = Path(__file__).resolve().parent.parent
PATCHES = REPO / "patches"
STANDIN = Path(__file__).parent / "upstream_standin"
SRC = STANDIN / "Tester" / "src"
API = "tf.raw_ops.BiasAdd"
MODELS = DEFAULT_MODELS  # online training takes kind, params, threshold from it
# timing fields differ between any two runs
_TIMING = ("score_time_s", "score_us_per_candidate", "hook_time_s", "run_time_s")


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACETEST_ML_")}
    env.update(OMP_NUM_THREADS="1", TF_NUM_INTRAOP_THREADS="1", TF_NUM_INTEROP_THREADS="1",
               TF_CPP_MIN_LOG_LEVEL="3")
    env.update(extra)
    return env


def upstream_main(work: Path, env: dict, rounds: int = 120) -> subprocess.CompletedProcess:
    """Upstream's own command, as its users type it."""
    return subprocess.run([sys.executable, "main.py", f"--target_api={API}", f"--test_round={rounds}",
                           f"--work_path={work}"], cwd=SRC, env=env, capture_output=True, text=True,
                          timeout=600)


def stats(work: Path) -> dict:
    st = json.loads((work / "output_tf_0" / API / hook.STATS_FILE).read_text())
    return {k: v for k, v in st.items() if k not in _TIMING}


def test_patch_filters_exactly_like_the_acetest_command(tmp_path):
    seed = "5"
    env = _env(PYTHONPATH=f"{PATCHES}{os.pathsep}{REPO}", PYTHONHASHSEED=seed, ACETEST_ML_FILTER="online",
               ACETEST_ML_SEED=seed, ACETEST_ML_WARMUP="30", ACETEST_ML_MODELS=str(MODELS))
    proc = upstream_main(tmp_path / "patched", env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    patched = stats(tmp_path / "patched")
    assert patched["filter"] == "online" and patched["runs"] == 120
    assert patched["online"]["trainings"] >= 1 and patched["accepted"] > 0

    out = io.StringIO()
    code = runner.run_upstream([f"--target_api={API}", "--test_round=120", f"--work_path={tmp_path / 'cmd'}"],
                               ml_filter="online", warmup=30, seed=int(seed), acetest_home=str(STANDIN),
                               models=str(MODELS),
                               out=out, log=str(tmp_path / "log.txt"))
    assert code == 0, out.getvalue()
    assert stats(tmp_path / "cmd") == patched  # same seed, same statistics file


def test_without_the_variable_nothing_is_patched(tmp_path):
    probe = ("import random, sys; random.seed(1); import APIManager, Runner; "
             "print(hasattr(APIManager.APIManager.generate_random_args, '__wrapped__'), "
             "hasattr(Runner.Runner.run, '__wrapped__'), 'acetest_ml' in sys.modules, random.random())")
    with_path = subprocess.run([sys.executable, "-c", probe], cwd=SRC, capture_output=True, text=True,
                               env=_env(PYTHONPATH=f"{PATCHES}{os.pathsep}{REPO}", ACETEST_ML_SEED="3"))
    without = subprocess.run([sys.executable, "-c", probe], cwd=SRC, capture_output=True, text=True,
                             env=_env(PYTHONPATH=str(REPO)))
    assert with_path.returncode == 0, with_path.stderr
    assert with_path.stdout == without.stdout
    assert with_path.stdout.startswith("False False False ")
    # and with it, the same probe sees the hook waiting for upstream's imports
    on = subprocess.run([sys.executable, "-c", probe], cwd=SRC, capture_output=True, text=True,
                        env=_env(PYTHONPATH=f"{PATCHES}{os.pathsep}{REPO}", ACETEST_ML_FILTER="online"))
    assert on.returncode == 0, on.stderr
    assert on.stdout.startswith("True True True ")
    # a plain main.py run with the folder on the path writes no filter statistics
    proc = upstream_main(tmp_path / "plain", _env(PYTHONPATH=f"{PATCHES}{os.pathsep}{REPO}"), rounds=20)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not (tmp_path / "plain" / "output_tf_0" / API / hook.STATS_FILE).exists()


def test_a_bad_value_gives_one_line_and_an_unfiltered_run(tmp_path):
    env = _env(PYTHONPATH=f"{PATCHES}{os.pathsep}{REPO}", ACETEST_ML_FILTER="online",
               ACETEST_ML_EXPLORATION="lots")
    proc = upstream_main(tmp_path / "w", env, rounds=20)
    assert proc.returncode == 0, proc.stderr[-2000:]
    ours = [line for line in proc.stderr.splitlines() if "acetest-ml" in line]
    assert ours == ["acetest-ml: filter not installed, upstream runs unfiltered: "
                    "ACETEST_ML_EXPLORATION='lots' is not a float"], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    res = (tmp_path / "w" / "output_tf_0" / "res.csv").read_text()
    assert res.count(API) == 1  # upstream ran all its rounds
    assert not (tmp_path / "w" / "output_tf_0" / API / hook.STATS_FILE).exists()


def test_settings_from_the_environment():
    s = activate.settings_from_env({"ACETEST_ML_FILTER": "models", "ACETEST_ML_MODELS": "m.yaml",
                                    "ACETEST_ML_EXPLORATION": "0.1", "ACETEST_ML_SEED": "7",
                                    "ACETEST_ML_REALLOCATE": "0", "ACETEST_ML_PROBES": "2"})
    assert (s.filter, s.exploration, s.seed, s.reallocate, s.probes) == ("models", 0.1, 7, False, 2)
    assert os.path.isabs(s.models)
    # online learning inside upstream: defaults and overrides
    assert (s.min_per_class, s.retrain_every, s.threshold, s.rules) == (3, 10, "precision", True)
    s = activate.settings_from_env({"ACETEST_ML_FILTER": "online", "ACETEST_ML_THRESHOLD": "0.7",
                                    "ACETEST_ML_RULES": "0", "ACETEST_ML_MIN_PER_CLASS": "5",
                                    "ACETEST_ML_RETRAIN_EVERY": "25"})
    assert (s.min_per_class, s.retrain_every, s.threshold, s.rules) == (5, 25, 0.7, False)
    cfg = s.filter_config()
    assert (cfg.min_per_class, cfg.retrain_every, cfg.threshold, cfg.rules) == (5, 25, 0.7, False)
    assert activate.settings_from_env({"ACETEST_ML_FILTER": "online", "ACETEST_ML_THRESHOLD": "Auto"}).threshold == "auto"
    for bad, msg in (({"ACETEST_ML_FILTER": "online", "ACETEST_ML_THRESHOLD": "high"}, "THRESHOLD"),
                     ({"ACETEST_ML_FILTER": "online", "ACETEST_ML_THRESHOLD": "1.5"}, "THRESHOLD"),
                     ({"ACETEST_ML_FILTER": "online", "ACETEST_ML_RULES": "perhaps"}, "switch"),
                     ({"ACETEST_ML_FILTER": "sometimes"}, "use models or online"),
                     ({"ACETEST_ML_FILTER": "online", "ACETEST_ML_WARMUP": "1.5"}, "is not a int"),
                     ({"ACETEST_ML_FILTER": "online", "ACETEST_ML_EXPLORATION": "nan"}, "finite"),
                     ({"ACETEST_ML_FILTER": "online", "ACETEST_ML_REALLOCATE": "maybe"}, "switch")):
        try:
            activate.settings_from_env(bad)
        except activate.ConfigError as e:
            assert msg in str(e)
        else:
            raise AssertionError(f"accepted {bad}")
    # out-of-range numbers are refused when the hook is configured
    err = io.StringIO()
    saved = sys.stderr
    sys.stderr = err
    try:
        assert activate.activate_from_env({"ACETEST_ML_FILTER": "online", "ACETEST_ML_EXPLORATION": "2"}) is None
        assert activate.activate_from_env({}) is None
    finally:
        sys.stderr = saved
    assert err.getvalue().count("\n") == 1 and "exploration must be between 0 and 1" in err.getvalue()
