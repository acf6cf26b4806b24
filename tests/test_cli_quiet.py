"""The framework's start-up noise stays out of the user's terminal."""
import json
import os
import subprocess
import sys

from helpers import ACETEST_DATA, needs_acetest_data


def test_specs_prints_no_framework_noise(tmp_path):
    # log level 0: TensorFlow's INFO start-up lines are printed on every
    # machine (at the CLI's default level 2 some CPUs get none at all)
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env.update(OMP_NUM_THREADS="1", ACETEST_ML_CACHE_DIR=str(tmp_path / "cache"), TF_CPP_MIN_LOG_LEVEL="0")
    plain = subprocess.run([sys.executable, "-c", "import tensorflow"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=600)
    noise = [ln for ln in plain.stderr.splitlines() if ln.strip()]
    r = subprocess.run([sys.executable, "-m", "acetest_ml.cli", "specs", "--api", "tf.raw_ops.Conv2D"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    spec = json.loads(r.stdout)
    assert spec["name"] == "tf.raw_ops.Conv2D"
    assert {a["name"] for a in spec["args"]} >= {"input", "filter", "strides", "padding"}
    assert r.stderr == ""
    # the lines went to the import log instead
    log = (tmp_path / "cache" / "logs" / "import-tensorflow.log").read_text()
    assert noise, "a plain TensorFlow import at log level 0 printed nothing: nothing to hide"
    assert noise[0] in log


@needs_acetest_data
def test_acetest_campaign_prints_no_framework_noise(tmp_path):
    # ACETest mode reads the raw op's signature from TensorFlow in the
    # candidate process: that import must be quiet too
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env.update(OMP_NUM_THREADS="1", ACETEST_ML_CACHE_DIR=str(tmp_path / "cache"))
    r = subprocess.run([sys.executable, "-m", "acetest_ml.cli", "campaign", "--constraints", "acetest",
                        "--acetest-data", ACETEST_DATA, "--api", "tf.raw_ops.BiasAdd", "--budget", "3",
                        "--out", "out", "--no-progress"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert s["apis"]["tf.raw_ops.BiasAdd"]["executed"] == 3
    assert r.stderr == ""
