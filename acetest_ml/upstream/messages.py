"""Upstream's error messages of invalid runs, read as they are written.

Upstream's runner appends ``<mode>\\n<message>\\n`` to ``<output_dir>/invalid.log``
for every run the op rejects. A reader remembers how far it has read per
folder, so the text appended after a mark is the message of the run that
ran since. Several readers (the collector, the rule learner) keep their own
positions.
"""
from __future__ import annotations

import os
from typing import Optional

LOG_NAME = "invalid.log"
MAX_MESSAGE = 2000


class InvalidLog:
    def __init__(self) -> None:
        self._pos: dict[str, int] = {}

    def mark(self, output_dir: Optional[str]) -> None:
        """Start reading ``output_dir``'s log where it ends now (once per folder)."""
        if output_dir and output_dir not in self._pos:
            path = os.path.join(output_dir, LOG_NAME)
            self._pos[output_dir] = os.path.getsize(path) if os.path.isfile(path) else 0

    def new_text(self, output_dir: Optional[str]) -> Optional[str]:
        """The message appended since the last read (None when nothing was)."""
        if not output_dir:
            return None
        path = os.path.join(output_dir, LOG_NAME)
        if not os.path.isfile(path):
            return None
        start = self._pos.get(output_dir, 0)
        with open(path, "rb") as f:
            f.seek(start)
            data = f.read()
        self._pos[output_dir] = start + len(data)
        text = data.decode("utf-8", "replace")
        lines = text.split("\n", 1)
        return (lines[1] if len(lines) > 1 else lines[0]).strip()[:MAX_MESSAGE] or None
