"""Importing a framework in the tool's own processes without its start-up
noise on the user's terminal.

TensorFlow writes lines such as "All log messages before absl::InitializeLog()
is called are written to STDERR" and "oneDNN custom operations are on" straight
to file descriptor 2 while it is imported, whatever ``TF_CPP_MIN_LOG_LEVEL``
says. :func:`import_framework` points fd 2 at a log file for the duration of
the import (the workers keep theirs: their stderr is the worker log already).
Python exceptions are unaffected: they propagate and are reported as usual.
"""
from __future__ import annotations

import importlib
import os
import sys
import tempfile
import threading
from contextlib import contextmanager
from types import ModuleType
from typing import Iterator

_LOCK = threading.Lock()


def log_dir() -> str:
    """Folder of the import logs: ``$ACETEST_ML_CACHE_DIR`` or
    ``~/.cache/acetest-ml``, else the temporary folder."""
    base = os.environ.get("ACETEST_ML_CACHE_DIR") or os.path.expanduser("~/.cache/acetest-ml")
    for d in (os.path.join(base, "logs"), os.path.join(tempfile.gettempdir(), f"acetest-ml-{os.getuid()}")):
        try:
            os.makedirs(d, exist_ok=True)
            if os.access(d, os.W_OK):
                return d
        except OSError:
            continue
    return tempfile.gettempdir()


@contextmanager
def stderr_to(path: str) -> Iterator[None]:
    """Send everything written to fd 2 (C libraries included) to ``path``."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    except OSError:  # nowhere to put it: leave stderr alone
        yield
        return
    for stream in (sys.stderr, sys.__stderr__):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass
    saved = os.dup(2)
    try:
        os.dup2(fd, 2)
        os.close(fd)
        yield
    finally:
        try:
            if sys.__stderr__ is not None:
                sys.__stderr__.flush()
        except (OSError, ValueError):
            pass
        os.dup2(saved, 2)
        os.close(saved)


def import_framework(module: str) -> ModuleType:
    """``importlib.import_module(module)`` with the framework's start-up
    output sent to ``<log_dir>/import-<top package>.log``."""
    mod = sys.modules.get(module)
    if mod is not None:
        return mod
    with _LOCK:
        mod = sys.modules.get(module)
        if mod is not None:
            return mod
        top = module.split(".")[0]
        with stderr_to(os.path.join(log_dir(), f"import-{top}.log")):
            return importlib.import_module(module)
