"""The framework's start-up noise stays out of the user's terminal."""
import os
import subprocess
import sys


def test_specs_prints_no_framework_noise(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env.update(OMP_NUM_THREADS="1", ACETEST_ML_CACHE_DIR=str(tmp_path / "cache"))
    r = subprocess.run([sys.executable, "-m", "acetest_ml.cli", "specs", "--api", "tf.raw_ops.Conv2D"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert '"name": "tf.raw_ops.Conv2D"' in r.stdout
    assert r.stderr == ""
    # the lines went to the import log instead
    log = (tmp_path / "cache" / "logs" / "import-tensorflow.log").read_text()
    assert "oneDNN" in log or "absl" in log
