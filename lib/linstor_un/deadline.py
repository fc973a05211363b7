"""An overall deadline for one blocking request (oned's API, LINSTOR's REST API).

Their clients time out per read: a server that trickles its answer a byte at a time inside each
read timeout would hold an action without bound. The request runs in a worker thread; if it has
not finished by the deadline the caller cuts the connection (shutting a socket down wakes a read
blocked on it, closing alone does not) and the action fails naming the call.
"""
from __future__ import annotations

import socket
import threading
from typing import Callable, Optional, TypeVar

T = TypeVar("T")


class Expired(Exception):
    """The request did not finish in time (the worker thread is left to die with its socket)."""


def within(seconds: float, name: str, request: Callable[[], T]) -> T:
    outcome: dict = {}

    def work() -> None:
        try:
            outcome["reply"] = request()
        except BaseException as err:            # handed to the caller's thread
            outcome["error"] = err
    worker = threading.Thread(target=work, name=name, daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        raise Expired(name)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["reply"]


def cut(sock: Optional[socket.socket]) -> None:
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
