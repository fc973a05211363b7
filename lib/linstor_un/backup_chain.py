"""A VM's backup chain: what oned's BACKUP_CONFIG says, which snapshot is the base of the next
increment, and the block digests kept of it.

oned tells which backup succeeded only through the next one: BACKUP_CONFIG/LAST_INCREMENT_ID. So
each backup keeps the base named by it and removes every other backup snapshot of the VM's disks
(a failed or killed run's, an older chain's). The digests live on the front-end
(`<state>/digests/vm-<id>-<stime>/`, state: /var/lib/one/linstor_un); where they are missing
(another front-end, a lost disk) the base snapshot is read instead, and without either, an
increment holds the whole disk (correct, only larger).

A name and a number are not proof that a base is the one oned continues: increment numbers
restart at 0 whenever a chain is reset, and after an oned database restore, on a second front-end
or with a restored /var/lib/one the numbers oned gives may name another chain's snapshot or
digests. So every backup snapshot carries its identity (ChainLink: a random nonce, the time it was
taken, the chain's backup image), and so do its digests (the nonce). An increment uses a base only
when its identity matches oned's record of the last increment of this very chain (the backup
image INCREMENTAL_BACKUP_ID, its increment LAST_INCREMENT_ID and that increment's DATE: taken
before oned recorded it, not long before), and the digests only when they carry the base's nonce;
otherwise it reads the base snapshot, or, without a base it can trust, holds the whole disk.
"""
from __future__ import annotations

import os
import re
import secrets
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Iterator, Optional

from . import disks, names, ownership
from .errors import DriverError
from .linstor_api import Linstor, Snapshot
from .one_api import VmDoc
from .validate import natural
from .ownership import Owner
from .report import Report

if TYPE_CHECKING:
    from .action import Action

CHAIN_LINK = "Aux/one/linstor_un/BACKUP/"      # + snapshot name: the backup's ChainLink
CLOCK_SKEW = 300                    # seconds the front-end's and oned's clocks may differ
LONGEST_BACKUP = 7 * 86400          # a backup's snapshot is taken at most this long before oned records it


@dataclass(frozen=True)
class BackupConfig:
    """The VM's BACKUPS/BACKUP_CONFIG, as oned fills it in."""
    incremental: bool               # MODE=INCREMENT (FULL when absent)
    last_increment: int             # LAST_INCREMENT_ID: -1 when no chain was started (or it was reset)
    fs_freeze: str                  # NONE (oned's default), AGENT, SUSPEND

    chain_image: Optional[int] = None   # INCREMENTAL_BACKUP_ID: the backup image of the chain, when one runs

    @classmethod
    def of(cls, vm: VmDoc) -> "BackupConfig":
        cfg = "BACKUPS/BACKUP_CONFIG/"
        mode = vm.text(cfg + "MODE", "FULL").upper() or "FULL"
        if mode not in ("FULL", "INCREMENT"):
            raise DriverError(f"unknown BACKUP_CONFIG MODE '{mode}': FULL or INCREMENT")
        last = vm.text(cfg + "LAST_INCREMENT_ID", "-1") or "-1"
        if last != "-1" and natural(last) is None:
            raise DriverError(f"invalid BACKUP_CONFIG LAST_INCREMENT_ID '{last}'")
        chain = vm.text(cfg + "INCREMENTAL_BACKUP_ID", "-1") or "-1"
        return cls(mode == "INCREMENT", int(last), vm.text(cfg + "FS_FREEZE", "NONE").upper(),
                   natural(chain) if chain != "-1" else None)

    @property
    def increment_id(self) -> int:
        """The number oned gives this backup's files: 0 for a full one (also a chain's first)."""
        return self.last_increment + 1 if self.incremental and self.last_increment >= 0 else 0

    @property
    def base_id(self) -> Optional[int]:
        """The backup this increment is a delta to."""
        return self.last_increment if self.increment_id > 0 else None


@dataclass(frozen=True)
class ChainLink:
    """What one backup snapshot (and the digests read from it) is: a random nonce, when it was
    taken (front-end clock, seconds), and the backup image of its chain (None for a chain's full
    backup: oned makes that image after it)."""
    nonce: str
    taken: int
    chain: Optional[int]

    @classmethod
    def new(cls, chain: Optional[int]) -> "ChainLink":
        return cls(secrets.token_hex(8), int(time.time()), chain)

    def encode(self) -> str:
        return f"{self.nonce} {self.taken} {'-' if self.chain is None else self.chain}"

    @classmethod
    def decode(cls, text: Optional[str]) -> Optional["ChainLink"]:
        parts = (text or "").split()
        if len(parts) != 3 or not re.fullmatch(r"[0-9a-f]{16}", parts[0]) or natural(parts[1]) is None or \
                (parts[2] != "-" and natural(parts[2]) is None):
            return None
        return cls(parts[0], int(parts[1]), None if parts[2] == "-" else int(parts[2]))

    def continues(self, chain: Optional[int], recorded: Optional[int]) -> Optional[str]:
        """Why this is not the backup oned recorded as the last of `chain` at `recorded` (epoch
        seconds), or None when it is."""
        if chain is None or recorded is None:
            return "oned names no increment of a chain to continue"
        if self.chain is not None and self.chain != chain:
            return f"it belongs to the chain of backup image {self.chain}, oned continues image {chain}"
        if self.taken > recorded + CLOCK_SKEW:
            return "it was taken after oned recorded that increment (another chain of the same numbers)"
        if recorded - self.taken > LONGEST_BACKUP:
            return "it was taken long before oned recorded that increment"
        return None


BackupDisk = disks.VmVolume


def state_dir() -> Path:
    base = os.environ.get("ONE_LOCATION")
    return Path(base) / "var" / "linstor_un" if base else Path("/var/lib/one/linstor_un")


@dataclass(frozen=True)
class DigestStore:
    """Block digests of each disk at each kept backup, on the front-end."""
    root: Path

    @classmethod
    def of(cls, vm: VmDoc) -> "DigestStore":
        return cls(state_dir() / "digests" / f"vm-{vm.id}-{natural(vm.text('STIME')) or 0}")

    def _file(self, disk_id: int, increment: int) -> Path:
        return self.root / f"disk.{disk_id}.{increment}.digests"

    HEADER = b"linstor_un digests v2 "

    def _head(self, nonce: str) -> bytes:
        return self.HEADER + nonce.encode() + b"\n"

    def previous(self, disk_id: int, increment: Optional[int], nonce: Optional[str]) -> Optional[BinaryIO]:
        """The digests kept for that increment, opened after their header, if they are the ones
        read from the snapshot of that nonce (else None: another chain's, an older file's, a
        restored directory's). Read as a stream: their size grows with the disk."""
        if increment is None or nonce is None:
            return None
        try:
            f = open(self._file(disk_id, increment), "rb")
        except OSError:
            return None
        head = self._head(nonce)
        if f.read(len(head)) != head:
            f.close()
            return None
        return f

    def load(self, disk_id: int, increment: Optional[int], nonce: Optional[str]) -> bytes:
        f = self.previous(disk_id, increment, nonce)
        if f is None:
            return b""
        with f:
            return f.read()

    @contextmanager
    def writing(self, disk_id: int, increment: int, nonce: str, keep: bool, report: Report) -> Iterator[BinaryIO]:
        """A file the host's new digests stream into, kept under its name (atomically) only if
        the body ends well and `keep`; if the front-end cannot keep them, the next increment reads
        its base snapshot as well (slower, as exact)."""
        tmp = self._file(disk_id, increment).with_suffix(".part")
        try:
            if not keep:
                raise FileNotFoundError
            self.root.mkdir(parents=True, exist_ok=True)
            sink = open(tmp, "wb")
            sink.write(self._head(nonce))
            sink.flush()
        except OSError as err:
            if keep:
                report.info(f"could not keep the block digests of disk {disk_id} in {self.root} "
                            f"({err.strerror}): the next increment reads the base snapshot too")
            with open(os.devnull, "wb") as null:
                yield null
            return
        try:
            with sink:
                yield sink
            os.replace(tmp, self._file(disk_id, increment))
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def save(self, disk_id: int, increment: int, digests: bytes, nonce: str, report: Report) -> None:
        with self.writing(disk_id, increment, nonce, True, report) as sink:
            sink.write(digests)

    def keep_only(self, disk_id: int, keep: set[int]) -> None:
        for path in self.root.glob(f"disk.{disk_id}.*"):
            inc = path.name.split(".")[2]
            if natural(inc) not in keep:
                path.unlink(missing_ok=True)

    @staticmethod
    def forget_vm(vm_id: int) -> None:
        for path in (state_dir() / "digests").glob(f"vm-{vm_id}-*"):
            shutil.rmtree(path, ignore_errors=True)


def backup_disks(act: "Action", vm: VmDoc, disk_ids: tuple[int, ...], system_ds: int) -> list[BackupDisk]:
    return disks.volumes(act, vm, disk_ids, system_ds)


def mine(snap: Snapshot, vm_id: int, owner: Owner) -> Optional[int]:
    """The increment a backup snapshot of this very VM disk is for, else None."""
    parsed = names.backup_snapshot_of(snap.name)
    if parsed is None or parsed[0] != vm_id or not ownership.snapshot_is_mine(snap, owner):
        return None
    return parsed[1]


def tidy(disk: BackupDisk, vm_id: int, keep: Optional[int], taking: str,
         snaps: Optional[list[Snapshot]] = None) -> Optional[Snapshot]:
    """Remove this VM disk's backup snapshots except `keep`; returns `keep`'s if it is there. A
    snapshot of the name about to be taken that is not ours stops the backup before anything
    happens. (`snaps`: the disk's snapshots, if the caller listed them.)"""
    kept = None
    for snap in disk.api.snapshots(disk.resource) if snaps is None else snaps:
        inc = mine(snap, vm_id, disk.owner)
        if inc is None:
            if snap.name == taking:
                raise DriverError(f"snapshot {taking} of {disk.resource} exists and was not taken for "
                                  f"{disk.owner.describe()} by linstor_un: nothing was changed. Delete it if "
                                  f"nobody needs it (linstor snapshot delete {disk.resource} {taking}) and retry")
            continue
        if inc == keep:
            kept = snap
        else:
            disk.api.delete_snapshot(disk.resource, snap.name)
    return kept


def last_increment_date(act: "Action", cfg: BackupConfig) -> Optional[int]:
    """When oned recorded the last increment of the chain it continues (its DATE), or None."""
    if cfg.base_id is None or cfg.chain_image is None:
        return None
    try:
        image = act.one.image(cfg.chain_image)
    except DriverError as err:
        act.report.info(f"cannot read backup image {cfg.chain_image} ({err})")
        return None
    for inc in image.root.findall("BACKUP_INCREMENTS/INCREMENT"):
        if natural((inc.findtext("ID") or "").strip()) == cfg.base_id:
            return natural((inc.findtext("DATE") or "").strip())
    return None


def trusted_base(act: "Action", disk: BackupDisk, cfg: BackupConfig, base: Optional[Snapshot],
                 recorded: Optional[int]) -> Optional[ChainLink]:
    """The base snapshot's identity, if it is the backup oned continues; else the snapshot goes
    (a backup of another chain under the same number) and None."""
    if base is None:
        return None
    link = ChainLink.decode(base.props.get(CHAIN_LINK + base.name))
    why = "it carries no chain identity (an older linstor_un's)" if link is None else \
        link.continues(cfg.chain_image, recorded)
    if why is None:
        return link
    act.report.info(f"disk {disk.disk_id}: {base.name} is not the base oned continues ({why}): the increment "
                    f"holds the whole disk")
    disk.api.delete_snapshot(disk.resource, base.name)
    return None


def forget(api: Linstor, res: str, vm_id: int, owner: Owner, snaps: Optional[list[Snapshot]] = None) -> None:
    """The VM no longer backs this volume up (detached, terminated, restored): its chain goes
    (`snaps`: the listing the caller just read)."""
    for snap in api.snapshots(res) if snaps is None else snaps:
        if mine(snap, vm_id, owner) is not None:
            api.delete_snapshot(res, snap.name)
