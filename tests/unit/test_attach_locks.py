"""A VM's attach on a host where a copy holds the volume's replica (shared lock, for the whole
copy) takes the replica over at once instead of waiting for the copy (it gave up after 120 s)."""
from __future__ import annotations

import fcntl
import os
import threading
import time

from linstor_un import attach
from linstor_un.linstor_api import Replica


class FakeApi:
    def __init__(self):
        self.props = {attach.TEMPORARY: "yes"}
        self.calls = []

    def replicas(self, resource):
        self.calls.append("list")
        return [Replica(resource, "node1", ["DISKLESS"], dict(self.props), False, "/dev/drbd1001", "DISKLESS",
                        "dless", 0),
                Replica(resource, "node2", [], {}, False, "/dev/drbd1001", "LVM_THIN", "data", 1024)]

    def set_replica_props(self, node, resource, props, delete=()):
        self.calls.append(f"unmark {node}")
        for k in delete:
            self.props.pop(k, None)


def test_attach_takes_over_a_replica_a_copy_is_using(tmp_path, monkeypatch):
    monkeypatch.setenv("ONE_LOCATION", str(tmp_path))
    borrower = attach.HostLock("node1", "one-image-1")
    assert borrower.shared()                           # a copy through node1, in progress
    api = FakeApi()
    done: dict = {}
    worker = threading.Thread(target=lambda: done.setdefault(
        "device", attach.Attacher(api, report=None).attach("node1", "one-image-1")))
    started = time.monotonic()
    worker.start()
    worker.join(10)
    assert done.get("device") == "/dev/drbd1001" and time.monotonic() - started < 5
    assert attach.TEMPORARY not in api.props and "unmark node1" in api.calls    # the VM's now: it stays
    # and the lock is free again for the borrower's give_back
    probe = os.open(borrower.path, os.O_RDWR)
    borrower.release()
    fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.close(probe)
