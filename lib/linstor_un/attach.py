"""Making a volume usable on a host (diskless attach) and giving it back, safely across processes.

oned runs up to 15 transfers at once, so two actions may attach, use and detach the same resource
on the same host at the same time. Per (host, resource) there is one lock file on the front-end
(never deleted, so every process locks the same inode: BUG-19):
- attach: exclusive lock while checking and creating the replica;
- temporary use (a copy through a host): the lock is held shared until the copy ends, so copies
  through one host share one replica; the replica is marked `Aux/one/TEMPORARY` if a copy
  created it; at the end, whoever can take the lock exclusively (no other user left) removes a
  still-marked diskless replica;
- permanent attach (a VM's disk): the mark is removed, the replica stays;
- detach (delete, mvds, mv, postmigrate): exclusive lock (waits for temporary users: BUG-20),
  then the replica goes only if it is diskless, not in use, and no other VM disk on that host
  links to it (BUG-15).
"""
from __future__ import annotations

import fcntl
import os
import re
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

from .errors import DriverError
from .linstor_api import Linstor, Replica
from .report import Report

TEMPORARY = "Aux/one/TEMPORARY"


def lock_dir() -> Path:
    base = os.environ.get("ONE_LOCATION")
    path = Path(base) / "var" / "lock" / "one" if base else Path("/var/lock/one")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        path = Path(os.environ.get("TMPDIR", "/tmp")) / f"one-lock-{os.getuid()}"
        path.mkdir(parents=True, exist_ok=True)
    return path


class HostLock:
    def __init__(self, host: str, resource: str, timeout: float = 120):
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{host}-{resource}")
        self.path = lock_dir() / f"linstor_un-{safe}.lock"
        self.timeout = timeout
        self.fd: Optional[int] = None

    def _take(self, mode: int, blocking: bool = True) -> bool:
        if self.fd is None:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o640)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(self.fd, mode | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if not blocking:
                    return False
                if time.monotonic() > deadline:
                    raise DriverError(f"timed out waiting for lock {self.path.name}")
                time.sleep(0.05)

    def exclusive(self, blocking: bool = True) -> bool:
        return self._take(fcntl.LOCK_EX, blocking)

    def shared(self) -> bool:
        return self._take(fcntl.LOCK_SH)

    def unlock(self) -> None:
        """Lets go of the lock, keeping the file open (to take it again in another mode)."""
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def require_a_disk(resource: str, host: str, replicas: list[Replica]) -> None:
    """Without a diskful peer LINSTOR's make-available makes the first disk, on the host, empty
    (CtrlRscMakeAvailableApiCallHandler): a VM would see an empty disk instead of its data."""
    if not any(not r.diskless and r.usable for r in replicas):
        raise DriverError(f"attach {resource} on {host}: LINSTOR holds no disk of it any more (attaching would "
                          f"make a new, empty one): nothing was changed")


def replica_on(replicas: list[Replica], host: str) -> Optional[Replica]:
    for r in replicas:
        if r.node.lower() == host.lower():
            return r
    return None


class Attacher:
    def __init__(self, api: Linstor, report: Report, diskless_pool: str = "DfltDisklessStorPool"):
        self.api = api
        self.report = report
        self.diskless_pool = diskless_pool
        # (host, resource) -> the lock held while borrowed, and whether the replica may be temporary
        self._held: dict[tuple[str, str], tuple[HostLock, bool]] = {}

    def _ensure(self, host: str, resource: str) -> tuple[Replica, str, bool]:
        """Under the exclusive lock: the replica on host (created diskless if missing), its device,
        and whether it was created."""
        replicas = self.api.replicas(resource)
        if not replicas:
            raise DriverError(f"resource {resource} has no replicas in LINSTOR")
        mine = replica_on(replicas, host)
        created = False
        if mine is None or not mine.usable:
            require_a_disk(resource, host, replicas)
            # make-available also turns a tie-breaker into a normal diskless replica and
            # cancels a pending delete
            self.api.make_available(host, resource)
            # a tie-breaker turned into a usable replica counts as ours: deleting it again lets
            # LINSTOR take it back as its tie-breaker
            created = mine is None or mine.tiebreaker
            mine = replica_on(self.api.replicas(resource), host)
            if mine is None:
                raise DriverError(f"attach {resource} on {host}: LINSTOR did not create the replica")
        if not mine.device:
            raise DriverError(f"attach {resource} on {host}: LINSTOR reports no device")
        return mine, mine.device, created

    def attach(self, host: str, resource: str) -> str:
        """For a VM: the replica stays. Returns the device path on the host."""
        return self.attach_replicas(host, resource)[0]

    def attach_replicas(self, host: str, resource: str) -> tuple[str, list[Replica]]:
        """attach, also returning the listing it read (callers need not list again).

        A usable replica there is used as it is; otherwise make-available makes one (a tie-breaker
        becomes a normal diskless replica; a pending delete is cancelled) - only while a disk
        replica exists elsewhere (require_a_disk)."""
        lock = HostLock(host, resource)
        if not lock.exclusive(blocking=False):
            # a copy through this host holds it (shared, for as long as it copies): the replica it
            # uses is there and cannot go while we hold the lock shared too - take it over rather
            # than wait for the copy to end
            lock.shared()
            try:
                replicas = self.api.replicas(resource)
                mine = replica_on(replicas, host)
                if mine is not None and mine.usable and mine.device:
                    if TEMPORARY in mine.props:     # its borrower's give_back (exclusive) keeps it now
                        self.api.set_replica_props(host, resource, {}, delete=[TEMPORARY])
                    lock.release()
                    return mine.device, replicas
                lock.unlock()
                lock.exclusive()
            except BaseException:
                lock.release()
                raise
        try:
            replicas = self.api.replicas(resource)
            mine = replica_on(replicas, host)
            if mine is None or not mine.usable:
                require_a_disk(resource, host, replicas)
                self.api.make_available(host, resource)
                replicas = self.api.replicas(resource)
                mine = replica_on(replicas, host)
            if mine is None or not mine.device:
                raise DriverError(f"attach {resource} on {host}: LINSTOR reports no device")
            if TEMPORARY in mine.props:         # a copy's temporary replica becomes the VM's
                self.api.set_replica_props(host, resource, {}, delete=[TEMPORARY])
            return mine.device, replicas
        finally:
            lock.release()

    def borrow(self, host: str, resource: str, known: Sequence[Replica] = ()) -> str:
        """For a copy through host: returns the device; `give_back` must follow.

        Concurrent copies of one image through one host share its replica: a usable replica
        found under the shared lock cannot go away (removers need the lock exclusively), so
        only the first copy attaches and the last one detaches; borrowers that find the lock
        taken look one at a time (a gate lock). A diskful replica in `known` (a
        listing the caller just read) is used as it is: detaches never remove one."""
        mine = replica_on(list(known), host)
        if mine is not None and not mine.diskless and mine.usable and mine.device:
            return mine.device
        lock = HostLock(host, resource)
        # nobody else at it (the usual case): one listing under the exclusive lock does
        if not lock.exclusive(blocking=False):
            # others are: borrowers pass one at a time through a gate, so that one finding no
            # replica waits for the lock alone (borrowers trying shared/exclusive in turn would
            # keep each other out for as long as they come: BUG-20 under load)
            gate = HostLock(host, resource + ".gate")
            gate.exclusive()
            try:
                lock.shared()
                try:
                    mine = replica_on(self.api.replicas(resource), host)
                except BaseException:
                    lock.release()
                    raise
                if mine is not None and mine.usable and mine.device:
                    if mine.diskless:
                        self._held[(host, resource)] = (lock, TEMPORARY in mine.props)
                    else:
                        lock.release()      # a diskful replica is never removed by a detach: no cleanup
                    return mine.device
                # none: users of a replica hold the lock only while it exists, so only a brief
                # remover or creator holds it now. flock cannot upgrade: let go, then wait
                lock.unlock()
                try:
                    lock.exclusive()
                except BaseException:
                    lock.release()
                    raise
            finally:
                gate.release()
        try:
            mine, device, created = self._ensure(host, resource)
            if created:
                try:
                    self.api.set_replica_props(host, resource, {TEMPORARY: "yes"})
                except DriverError:
                    self.api.delete_replica(host, resource)     # unmarked, it would stay forever
                    raise
        except BaseException:
            lock.release()
            raise
        lock.shared()           # other borrowers may join; detachers wait
        # only a replica that is (or may become, being ours) temporary needs a look when given back
        self._held[(host, resource)] = (lock, created or TEMPORARY in mine.props)
        return device

    @contextmanager
    def borrowed(self, host: str, resource: str, known: Sequence[Replica] = ()) -> Iterator[str]:
        """`with attacher.borrowed(host, res) as device:` - borrow, given back however it ends."""
        device = self.borrow(host, resource, known)
        try:
            yield device
        finally:
            self.give_back(host, resource)

    def give_back(self, host: str, resource: str) -> None:
        held = self._held.pop((host, resource), None)
        if held is None:
            return
        lock, may_be_temporary = held
        if not may_be_temporary:        # a VM's replica (or a diskful one): it stays, nothing to check
            lock.release()
            return
        try:
            # unlock first: two users converting shared->exclusive at once would block each other
            # and both leave; after unlocking, whoever comes last finds nobody else and cleans up
            lock.unlock()
            if not lock.exclusive(blocking=False):
                return          # someone else still uses it; the last one cleans up
            mine = replica_on(self.api.replicas(resource), host)
            if mine and mine.diskless and TEMPORARY in mine.props and not mine.in_use:
                self.api.delete_replica(host, resource)
                kept = replica_on(self.api.replicas(resource), host)
                if kept is not None and TEMPORARY in kept.props:    # taken over as a tie-breaker
                    self.api.unmark_replica(host, resource, TEMPORARY)
        finally:
            lock.release()

    def give_back_all(self) -> None:
        for host, resource in list(self._held):
            try:
                self.give_back(host, resource)
            except DriverError as err:
                self.report.error(f"could not detach temporary {resource} from {host}: {err}")

    def detach(self, host: str, resource: str,
               still_linked: Callable[[Replica], bool] = lambda replica: False) -> bool:
        """Remove host's diskless replica unless something still uses it. True if removed.

        still_linked(replica) is asked under the lock, with the replica LINSTOR lists (its
        device): the caller looks for other VM disks on the host linking to it (BUG-15)."""
        lock = HostLock(host, resource)
        lock.exclusive()
        try:
            mine = replica_on(self.api.replicas(resource), host)
            if mine is None or not mine.diskless or mine.tiebreaker:
                return False
            if mine.in_use:
                self.report.info(f"{resource} stays on {host}: it is in use there")
                return False
            if still_linked(mine):
                self.report.info(f"{resource} stays on {host}: another VM disk there uses it")
                return False
            self.api.delete_replica(host, resource)
            return True
        finally:
            lock.release()
