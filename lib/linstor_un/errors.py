"""The one exception an action raises to fail: a message oned shows to the user."""
from __future__ import annotations


class DriverError(Exception):
    """A failure with a one-line, human-readable reason (which step, what went wrong)."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))   # oned wants one line


class NotFound(DriverError):
    """LINSTOR says the object a request named does not exist (FAIL_NOT_FOUND_*)."""


class HungCommand(DriverError):
    """A host command gave no answer in time: what it did on the host is unknown."""


class HostUnreachable(DriverError):
    """A host could not be reached over SSH at all: nothing was run there."""


class Terminated(DriverError):
    """SIGTERM (a cancel, oned shutting down): the action stops where it is and undoes its work."""


class Deferred(DriverError):
    """LINSTOR finishes a deletion only when offline nodes are back: the name stays taken."""
