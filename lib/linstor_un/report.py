"""Logging to stderr in the form oned shows for the running OpenNebula version.

- 5.6 - 6.0.2: every stderr line goes to the VM log; the failure reason oned keeps is the text
  between the `ERROR MESSAGE --8<------` and `ERROR MESSAGE ------>8--` markers.
- 6.0.3 - 6.10: on failure the whole stderr becomes the reason (newlines become spaces), and on
  success stderr is dropped: so only the final error line is written - with what could not be
  undone (the error-level lines) appended to it, so that a leftover is never invisible.
- 7.0+: `LEVEL: [id] msg` lines are forwarded as log messages (to the VM log when id is the VM's)
  and taken out of the reason, which is the remaining lines: the final error is a plain line.
stdout is never touched here: it carries only what oned parses.
"""
from __future__ import annotations

import re
import sys
from typing import Optional, TextIO

Version = tuple[int, int, int]

_ERROR_LINE = re.compile(r"error|fail|cannot|can't|could not|unable|must|invalid|denied|refus|not found|"
                         r"no such|no space|not permitted|too (small|large|big)|unsupported|missing", re.I)
LINE_LIMIT = 300


def meaningful(stderr: bytes) -> str:
    """What a command's stderr says, in one line: the first line that reads as an error, and the
    last line (where tools put their verdict), each cut at LINE_LIMIT. Tools that print their
    usage after the reason (mkfs.xfs: 'Filesystem must be larger than 300MB.' then 40 lines of
    usage) keep the reason; the one formatter for every failure message."""
    lines = [" ".join(ln.split()) for ln in stderr.decode(errors="replace").splitlines()]
    lines = [ln for ln in lines if ln]
    if not lines:
        return "(no error output)"
    first = next((ln for ln in lines if _ERROR_LINE.search(ln)), lines[0])
    picked = [first] if first == lines[-1] else [first, lines[-1]]
    return " ... ".join(ln if len(ln) <= LINE_LIMIT else ln[:LINE_LIMIT] + "..." for ln in picked)


class Report:
    def __init__(self, script: str, version: Version, object_id: Optional[int] = None,
                 stream: TextIO = sys.stderr):
        self.script = script
        self.version = version
        self.object_id = object_id
        self.stream = stream
        self.kept: list[str] = []       # 6.0.3-6.10: error lines, told with the final reason

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
            # would end up inside the error message, dropped on success: an error line (a step
            # that could not be undone) is kept for the final reason instead
            if level == "ERROR":
                self.kept.append(message)
            return
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
        if self._era == "6" and self.kept:
            message += " (" + "; ".join(" ".join(k.split()) for k in self.kept) + ")"
        if self._era == "5":
            self.stream.write(f"ERROR: {self.script}: {message}\n"
                              f"ERROR MESSAGE --8<------\n{message}\nERROR MESSAGE ------>8--\n")
        else:
            self.stream.write(f"{message}\n")
        self.stream.flush()
