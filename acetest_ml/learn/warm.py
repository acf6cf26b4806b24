"""Imported by the candidate generator's fork server (``generate.PRELOAD``):
reads and compiles the message families once there, so the child process
of every API inherits them instead of loading them at its first invalid run
(about a second of CPU inside the API's time)."""
from ..errors import ConfigError
from .patterns import load_families

try:
    load_families()
except ConfigError:  # a broken table is reported by the child that needs it
    pass
