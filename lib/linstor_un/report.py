"""Logging to stderr in the form oned shows for the running OpenNebula version.

- 5.6 - 6.0.2: every stderr line goes to the VM log; the failure reason oned keeps is the text
  between the `ERROR MESSAGE --8<------` and `ERROR MESSAGE ------>8--` markers.
- 6.0.3 - 6.10: on failure the whole stderr becomes the reason (newlines become spaces), and on
  success stderr is dropped: so only the final error line is written.
- 7.0+: `LEVEL: [id] msg` lines are forwarded as log messages (to the VM log when id is the VM's)
  and taken out of the reason, which is the remaining lines: the final error is a plain line.
stdout is never touched here: it carries only what oned parses.
"""
from __future__ import annotations

import sys
from typing import Optional, TextIO

Version = tuple[int, int, int]


class Report:
    def __init__(self, script: str, version: Version, object_id: Optional[int] = None,
                 stream: TextIO = sys.stderr):
        self.script = script
        self.version = version
        self.object_id = object_id
        self.stream = stream

    @property
    def _era(self) -> str:
        if self.version >= (7, 0, 0):
            return "7"
        if self.version >= (6, 0, 3):
            return "6"
        return "5"

    def _log(self, level: str, message: str) -> None:
        era = self._era
        if era == "6":
            return                      # would end up inside the error message; dropped on success
        prefix = f"{level}: "
        if era == "7" and self.object_id is not None:
            prefix += f"{self.object_id} "
        self.stream.write(f"{prefix}{self.script}: {message}\n")
        self.stream.flush()

    def info(self, message: str) -> None:
        self._log("INFO", message)

    def debug(self, message: str) -> None:
        self._log("DEBUG", message)

    def error(self, message: str) -> None:
        self._log("ERROR", message)

    def fail(self, message: str) -> None:
        """The final reason of a failed action, in the form oned keeps as the error."""
        message = " ".join(message.split())
        if self._era == "5":
            self.stream.write(f"ERROR: {self.script}: {message}\n"
                              f"ERROR MESSAGE --8<------\n{message}\nERROR MESSAGE ------>8--\n")
        else:
            self.stream.write(f"{message}\n")
        self.stream.flush()
