"""Suite-wide setup."""
import os

# The suite's real TensorFlow crashes (a CHECK failure in oneDNN's Conv2D
# kernel) need oneDNN's kernels, which TensorFlow switches on by default only
# on some CPUs; tests that need them off set the variable themselves.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
