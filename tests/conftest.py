"""Suite-wide setup."""
import os

# TensorFlow's oneDNN kernels on, as TensorFlow does by default on some CPUs,
# so every machine runs the same kernels; tests that need them off set the
# variable themselves.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
