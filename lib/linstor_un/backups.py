"""VM backups (OpenNebula 6.6+): what the TM pre/postbackup and restore actions do.

A backup of disks D of a VM:
1. every disk of D is snapshotted in one LINSTOR request, `linstor_un-backup-<vm>-<increment>`
   (one instant for all; a running guest is frozen around that request only);
2. each snapshot is restored into a temporary resource and read once on the VM's host by
   `backup_host` (sent over SSH), which writes `<vm_dir>/backup/disk.<id>.<increment>` (qcow2)
   and returns the block digests of the disk; `vm.xml` (base64 of the VM) goes next to it. That
   directory is what OpenNebula's backup datastores (rsync, restic) copy away (`backup`) and rebuild
   (`qemu-img rebase -u` + convert for increment chains);
3. INCREMENT mode keeps the snapshot and the digests as the base of the next increment; FULL mode
   keeps nothing.

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

import base64
import json
import os
import re
import secrets
import shutil
import subprocess
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from functools import partial
from typing import TYPE_CHECKING, Any, BinaryIO, ContextManager, Iterator, Optional

from . import changed_blocks, disks, host_ops, names, ownership, snapshots
from .errors import DriverError
from .linstor_api import Linstor, Snapshot
from .one_api import VmDoc
from .one_input import BackupArgs
from .validate import natural
from .ownership import Owner
from .remote import Host
from .report import Report
from .rollback import Rollback

if TYPE_CHECKING:
    from .action import Action
    from .settings import DatastoreSettings

BLOCK = 64 << 10                    # the qcow2 cluster and the unit of change
HOST_PROGRAM = Path(__file__).with_name("backup_host.py")
CHAIN_LINK = "Aux/one/linstor_un/BACKUP/"      # + snapshot name: the backup's ChainLink
LS_LIMIT = 300                      # seconds a backup datastore's `ls` may take
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


def tidy(disk: BackupDisk, vm_id: int, keep: Optional[int], taking: str) -> Optional[Snapshot]:
    """Remove this VM disk's backup snapshots except `keep`; returns `keep`'s if it is there. A
    snapshot of the name about to be taken that is not ours stops the backup before anything
    happens."""
    kept = None
    for snap in disk.api.snapshots(disk.resource):
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


def mark_for_snapshot(group: list[BackupDisk], snap: str, link: ChainLink) -> None:
    """Each disk's owner token and the backup's identity on its definition, for the snapshot to
    copy (LINSTOR before 1.32 cannot set a snapshot's own properties)."""
    for d in group:
        d.api.set_props(d.resource, {ownership.SNAPSHOT_TOKEN + snap: d.owner.snapshot_token(snap),
                                     CHAIN_LINK + snap: link.encode()})


def unmark(group: list[BackupDisk], snap: str) -> None:
    for d in group:
        d.api.set_props(d.resource, {}, delete=[ownership.SNAPSHOT_TOKEN + snap, CHAIN_LINK + snap])


@contextmanager
def guest_quiet(host: Host, domain: str, fs_freeze: str, report: Report) -> Iterator[None]:
    """A running guest's filesystems frozen (qemu-guest-agent) for as short as the body takes,
    and always thawed; FS_FREEZE=SUSPEND pauses the VM instead. Without an agent the backup is
    crash-consistent, and the VM log says so. (oned sets FS_FREEZE=NONE unless told otherwise, so
    NONE cannot mean "the operator chose not to": the agent is asked either way.)"""
    started = time.monotonic()
    if fs_freeze == "SUSPEND":
        host_ops.virsh(host, ["suspend", domain], "pause the VM for the snapshots")
        try:
            yield
        finally:
            host_ops.virsh(host, ["resume", domain], "resume the VM", check=False)
            report.info(f"VM paused for {time.monotonic() - started:.2f} s")
        return
    frozen = host_ops.virsh(host, ["domfsfreeze", domain], "freeze guest filesystems", check=False).rc == 0
    if not frozen:
        report.info("guest filesystems not frozen (no qemu-guest-agent answered): the backup is crash-consistent")
    try:
        yield
    finally:
        # thawed even when the freeze said it failed: a partial freeze must not stay
        host_ops.virsh(host, ["domfsthaw", domain], "thaw guest filesystems", check=False)
        if frozen:
            report.info(f"guest filesystems frozen for {time.monotonic() - started:.2f} s")


@dataclass(frozen=True)
class ReaderLimits:
    """The backup datastore's limits on the program that reads a disk on the host, as OpenNebula's
    own drivers apply them (src/tm_mad/lib/datastore.rb cmd_confinement): `<DS_MAD>_MAX_RIOPS`,
    `_MAX_WIOPS`, `_CPU_QUOTA`, `_MEMORY_MAX_MB` run it in the systemd slice
    `backup.<ds id>.slice` of oneadmin's user manager; else `<DS_MAD>_NICE` and `_IONICE`."""
    ds_id: int = -1
    nice: Optional[int] = None
    ionice: Optional[int] = None
    slice_settings: tuple = ()          # ((systemd key, value), ...)

    @classmethod
    def of(cls, act: "Action", vm: VmDoc) -> "ReaderLimits":
        ds_id = natural(vm.text("BACKUPS/BACKUP_CONFIG/LAST_DATASTORE_ID"))
        if ds_id is None:
            return cls()
        ds = act.one.datastore(ds_id)
        mad = ds.text("DS_MAD").upper()

        def number(name: str) -> Optional[int]:
            raw = ds.text(f"TEMPLATE/{mad}_{name}").strip()
            if not raw or raw == "-1":
                return None
            value = natural(raw)
            if value is None:
                raise DriverError(f"backup datastore {ds_id}: {mad}_{name} '{raw}' is not a whole number")
            return value
        nice, ionice = number("NICE"), number("IONICE")
        riops, wiops, cpu, mem = number("MAX_RIOPS"), number("MAX_WIOPS"), number("CPU_QUOTA"), number("MEMORY_MAX_MB")
        if nice is not None and not 0 <= nice <= 19:
            raise DriverError(f"backup datastore {ds_id}: {mad}_NICE {nice} is not 0-19")
        if ionice is not None and not 0 <= ionice <= 7:
            raise DriverError(f"backup datastore {ds_id}: {mad}_IONICE {ionice} is not 0-7")
        settings = tuple((k, v) for k, v in (("CPUQuota", f"{cpu}%" if cpu is not None else None),
                                             ("MemoryMax", f"{mem}M" if mem is not None else None),
                                             ("IOReadIOPSMax", riops), ("IOWriteIOPSMax", wiops))
                         if v is not None)
        return cls(ds_id, nice, ionice, settings)

    def apply(self, argv: list[str], io_path: str):
        """`argv` as the host runs it under these limits (io_path: where the IOPS limits apply)."""
        from .remote import Shell
        if self.slice_settings:
            name = f"backup.{self.ds_id}.slice"
            lines = ["[Slice]"] + [f"{k}={io_path + ' ' if k.startswith('IO') else ''}{v}"
                                   for k, v in self.slice_settings]
            unit = "\n".join(lines) + "\n"
            return Shell.join(["mkdir", "-p", ".config/systemd/user"], "&&",
                              ["printf", "%b", unit], ">", [f".config/systemd/user/{name}"], "&&",
                              ["systemctl", "--user", "daemon-reload"], "&&",
                              ["systemd-run", "--user", "--quiet", "--pipe", "--collect", "--wait", f"--slice={name}",
                               *argv])
        prefix = (["nice", "-n", str(self.nice)] if self.nice is not None else []) + \
                 (["ionice", "-c2", f"-n{self.ionice}"] if self.ionice is not None else [])
        return prefix + argv


def transfer_limit(size_bytes: int) -> float:
    """How long reading or writing a disk of that size may take, whole: generous (10 MiB/s, plus
    10 minutes), but a limit - a host that stops answering does not hold a backup for ever."""
    return 600 + size_bytes / (10 << 20)


def read_disk(act: "Action", host: Host, disk: BackupDisk, snap: str, base: Optional[str], increment: int,
              previous: Optional[BinaryIO], target: str, sink: BinaryIO, size_bytes: int,
              limits: ReaderLimits = ReaderLimits()) -> None:
    """Write the backup file of one disk from its snapshot; the disk's digests now stream into
    `sink` (the previous ones from `previous`, None where there are none)."""
    attacher = act.attacher(disk.settings)
    mode = "increment" if increment > 0 else "full"
    runs = changed_runs(act, disk, snap, base, previous) if mode == "increment" else None
    if runs is not None:
        mode = "changes"
    with snapshots.restored(disk.api, attacher, host.name, disk.resource, snap, "prebackup",
                            suffix="backup") as device:
        base_read: ContextManager[Optional[str]] = nullcontext(None)
        if mode == "increment" and previous is None and base is not None:
            act.report.info(f"no digests of disk {disk.disk_id} at the last backup here: reading {base} too")
            base_read = snapshots.restored(disk.api, attacher, host.name, disk.resource, base, "prebackup",
                                           suffix="backup-base")
        elif mode == "increment" and previous is None:
            act.report.info(f"disk {disk.disk_id} has no base at the last backup: the increment holds all of it")
        start = sink.tell()
        with base_read as base_device:
            reader = ["python3", "-c", HOST_PROGRAM.read_text(), mode, device, target, str(BLOCK),
                      *([base_device] if base_device else [])]
            feed: Any = b""
            if mode == "changes" and previous is not None:
                feed = Chained(changed_blocks.encode(runs or []), previous)
            elif previous is not None and mode == "increment":
                feed = previous
            out = host.run(limits.apply(reader, os.path.dirname(target)),
                           f"back up disk {disk.disk_id} ({disk.resource}) to {target}",
                           stdin=feed, stdout=sink, timeout=transfer_limit(size_bytes) * (2 if base_device else 1))
    counts = out.stderr.decode(errors="replace").strip().splitlines()[-1:]
    try:
        c = json.loads(counts[0]) if counts else {}
    except ValueError:
        c = {}
    act.report.info(f"disk {disk.disk_id}: {c.get('changed', 0)} of {c.get('blocks', 0)} blocks written"
                    f"{', %d zeroed' % c['zeroed'] if c.get('zeroed') else ''}, {c.get('file_bytes', 0)} bytes "
                    f"in {c.get('seconds', 0)} s, {c.get('read_bytes', 0)} bytes read")
    sink.flush()
    written = os.fstat(sink.fileno()).st_size - start if sink.name != os.devnull else None
    if written is not None and written != 16 * int(c.get("blocks", -1)):
        raise DriverError(f"back up disk {disk.disk_id}: the host returned {written} bytes of digests for "
                          f"{c.get('blocks', '?')} blocks")


class Chained:
    """A stream: `head`, then what `rest` reads."""

    def __init__(self, head: bytes, rest: BinaryIO):
        self.head, self.rest = head, rest

    def read(self, n: int = -1) -> bytes:
        if self.head:
            out, self.head = self.head[:n] if n >= 0 else self.head, self.head[n:] if n >= 0 else b""
            return out
        return self.rest.read(n)


def changed_runs(act: "Action", disk: BackupDisk, snap: str, base: Optional[str],
                 previous: Optional[BinaryIO]) -> Optional[list]:
    """The blocks the storage says changed since the base snapshot, or None (the whole snapshot is
    read: the VM log says why)."""
    said = f"disk {disk.disk_id}: the whole snapshot is read"
    if base is None:
        return None                         # (read_disk says why)
    if previous is None:
        act.report.info(f"{said} (no digests of the last backup here: changed blocks alone would not do)")
        return None
    try:
        snaps = {s.name: s for s in disk.api.snapshots(disk.resource)}
        if snap not in snaps or base not in snaps:
            raise changed_blocks.NoAnswer(f"snapshot {base if base not in snaps else snap} is not listed")
        both = [n for n in snaps[snap].nodes if n.lower() in {m.lower() for m in snaps[base].nodes}]
        why = changed_blocks.usable_names(disk.resource, snap, base)
        if why:
            raise changed_blocks.NoAnswer(why)
        runs, pool = changed_blocks.changed_runs(disk.api, act.hosts, disk.resource, base, snap, both,
                                                 snaps[snap].size_kib * 1024, BLOCK)
    except changed_blocks.NoAnswer as err:
        act.report.info(f"{said} (changed blocks: {err})")
        return None
    read, zeroed = (sum(r.count for r in runs if r.kind == k) for k in ("d", "z"))
    act.report.info(f"disk {disk.disk_id}: {pool.vg}/{pool.pool} on {pool.node} says {read} blocks changed"
                    f"{f' and {zeroed} are unmapped now' if zeroed else ''}: only those are read")
    return runs


def findable_by_backup_cancel() -> None:
    """`onevm backup-cancel`: OpenNebula's rsync and restic `backup_cancel` stop a running backup
    with `ps -C ruby` and a pattern of the action's command line (`(pre)?backup(_live)? .* <id> `),
    then SIGTERM - their TM actions are Ruby programs. This one takes the command name "ruby" so
    that the same search finds it (its command line matches already); SIGTERM then stops it and
    undoes what it made, as it always does."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(15, b"ruby", 0, 0, 0)      # PR_SET_NAME
    except (OSError, AttributeError):
        pass


def take(act: "Action", args: BackupArgs, live: bool) -> None:
    findable_by_backup_cancel()
    vm = VmDoc.parse(args.vm_xml)
    if vm.id != args.vm_id:
        raise DriverError(f"the VM XML on stdin is VM {vm.id}'s, not VM {args.vm_id}'s: nothing was changed")
    cfg = BackupConfig.of(vm)
    todo = backup_disks(act, vm, args.disk_ids, args.system_ds)
    increment, base_id = cfg.increment_id, cfg.base_id
    snap = names.backup_snapshot(vm.id, increment)
    base = names.backup_snapshot(vm.id, base_id) if base_id is not None else None
    store = DigestStore.of(vm)
    host = act.hosts[args.host]
    act.report.info(f"{'increment ' + str(increment) if increment else 'full backup'} of disk(s) "
                    f"{', '.join(str(d.disk_id) for d in todo)}")
    limits = ReaderLimits.of(act, vm)          # (a bad limit stops the backup before anything is made)
    recorded = last_increment_date(act, cfg)
    bases = {d.disk_id: trusted_base(act, d, cfg, tidy(d, vm.id, base_id, snap), recorded) for d in todo}
    link = ChainLink.new(cfg.chain_image if increment > 0 else None)
    backup_dir = f"{args.vm_dir}/backup"
    groups: dict[int, list[BackupDisk]] = {}
    for d in todo:
        groups.setdefault(id(d.api), []).append(d)
    with Rollback(act.report) as undo:
        host_ops.fresh_dir(host, backup_dir)
        undo.add(f"remove {backup_dir}", lambda: host_ops.remove_dir(host, backup_dir, check=False))
        undo.add(f"delete snapshots {snap}", lambda: [d.api.delete_snapshot(d.resource, snap) for d in todo])
        undo.add(f"clear the marks of {snap}", lambda: unmark(todo, snap))
        mark_for_snapshot(todo, snap, link)
        # the guest is quiet for the snapshot requests alone (one per controller)
        quiet = guest_quiet(host, args.deploy_id, cfg.fs_freeze, act.report) if live else nullcontext()
        with quiet:
            for group in groups.values():
                group[0].api.create_snapshots([d.resource for d in group], snap)
        unmark(todo, snap)
        if vm.text("TEMPLATE/TPM/MODEL"):
            host_ops.save_tpm(host, args.deploy_id, args.vm_dir, backup_dir)
        for d in todo:
            base_link = bases[d.disk_id]
            previous = store.previous(d.disk_id, base_id, base_link.nonce if base_link else None)
            if cfg.incremental:
                undo.add(f"forget digests of disk {d.disk_id}",
                         partial(store.keep_only, d.disk_id, {base_id} if base_id is not None else set()))
            try:
                with store.writing(d.disk_id, increment, link.nonce, cfg.incremental, act.report) as sink:
                    read_disk(act, host, d, snap, base if base_link else None, increment, previous,
                              f"{backup_dir}/disk.{d.disk_id}.{increment}", sink, vm.disk(d.disk_id).size_mb << 20,
                              limits)
            finally:
                if previous is not None:
                    previous.close()
        host_ops.write_file(host, f"{backup_dir}/vm.xml", base64.b64encode(args.vm_xml.encode()))
        if cfg.incremental:
            for d in todo:      # the base of the next increment, and this one's until oned confirms
                store.keep_only(d.disk_id, {increment} | ({base_id} if base_id is not None else set()))
        else:
            for d in todo:      # FULL mode: no chain to continue
                d.api.delete_snapshot(d.resource, snap)
                store.keep_only(d.disk_id, set())
        undo.commit()


def clean_up(act: "Action", args: BackupArgs) -> None:
    """After the backup datastore copied the files (or failed to): the files go, and the
    temporary resources a killed prebackup may have left. When oned says the backup failed
    (BACKUP_RESULT=FAILURE, 7.4.1+: the datastore could not store it) nothing of it stays to be
    continued: its snapshot and digests go, the base of the chain stays."""
    vm = VmDoc.parse(args.vm_xml)
    failed = vm.text("BACKUP_RESULT", "SUCCESS").upper() == "FAILURE"
    host_ops.remove_dir(act.hosts[args.host], f"{args.vm_dir}/backup", check=False)
    cfg = BackupConfig.of(vm) if failed else None
    for d in backup_disks(act, vm, args.disk_ids, args.system_ds):
        found = d.api.definitions(d.resource, f"{d.resource}-backup", f"{d.resource}-backup-base")
        source = found.pop(d.resource)
        for rd in found.values():
            if rd is not None:
                ownership.clear_temporary(d.api, rd, d.resource, source.props if source else None, reuse=False)
        if cfg is not None:
            act.report.info(f"the backup failed: disk {d.disk_id} keeps the base of its chain only")
            tidy(d, vm.id, cfg.base_id, names.backup_snapshot(vm.id, cfg.increment_id))
            DigestStore.of(vm).keep_only(d.disk_id, {cfg.base_id} if cfg.base_id is not None else set())


BACKUP_IMAGE = "6"                  # IMAGE/TYPE of a backup image (6.6+)
RESTORE_SAFETY = "linstor_un-restore-safety"


def backup_urls(act: "Action", vm: VmDoc, image, increment_id: int) -> dict[str, str]:
    """disk id -> URL of the backup files (up to `increment_id`, -1: the last), as the backup
    datastore's own `ls -i` lists them (src/tm_mad/lib/datastore.rb hands it the datastore, the
    VM and the image, plain XML on stdin)."""
    from lxml import etree
    ds = act.one.datastore(natural(image.text("DATASTORE_ID")) or 0, decrypt=True)
    ds_mad = ds.text("DS_MAD")
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", ds_mad):
        raise DriverError(f"backup datastore {ds.id} has an invalid DS_MAD '{ds_mad}'")
    ls = act.remotes / "datastore" / ds_mad / "ls"
    if not os.access(ls, os.X_OK):
        raise DriverError(f"backup datastore {ds.id} ({ds_mad}) has no 'ls' action: OpenNebula 6.10+ is needed")
    data = "<DS_DRIVER_ACTION_DATA>\n" + "\n".join(
        etree.tostring(doc.root, encoding="unicode") for doc in (ds, vm, image)) + "\n</DS_DRIVER_ACTION_DATA>\n"
    try:
        done = subprocess.run([str(ls), "-i", str(increment_id)], input=data, capture_output=True, text=True,
                              timeout=LS_LIMIT)
    except subprocess.TimeoutExpired:
        raise DriverError(f"cannot list backup image {image.id}: the backup datastore's ls gave no answer "
                          f"within {LS_LIMIT} s")
    if done.returncode != 0:
        raise DriverError(f"cannot list backup image {image.id}: {done.stderr.strip() or 'ls failed'}")
    try:
        listed = json.loads(done.stdout)
        out = {str(k): str(v) for k, v in listed.items()}
    except (ValueError, AttributeError, TypeError):
        raise DriverError(f"cannot list backup image {image.id}: unexpected answer {done.stdout[:200]!r}")
    if any(k != "tpm" and natural(k) is None for k in out):
        raise DriverError(f"cannot list backup image {image.id}: unexpected answer {done.stdout[:200]!r}")
    return out


def restore_in_place(act: "Action", args) -> None:
    """TM restore: the VM's disks (one, or all the backup holds) get the bytes they had at the
    chosen backup. Everything is downloaded before any disk is touched; each disk is written after
    a safety snapshot and rolled back to it if any disk fails. The backup chain starts anew (oned
    resets LAST_INCREMENT_ID), so this VM's backup snapshots go."""
    from . import image_source
    vm = act.one.vm(args.vm_id)
    image = act.one.image(args.image_id)
    if image.text("TYPE") != BACKUP_IMAGE:
        raise DriverError(f"image {args.image_id} is not a backup image: nothing was changed")
    urls = backup_urls(act, vm, image, args.increment_id)
    tpm = urls.pop("tpm", None)
    chosen = {int(i): u for i, u in urls.items() if args.disk_id in (-1, int(i))}
    if not chosen:
        raise DriverError(f"backup image {args.image_id} holds no disk {args.disk_id}: nothing was changed")
    todo = backup_disks(act, vm, tuple(sorted(chosen)), args.system_ds)
    host = act.hosts[args.host]
    files: dict[int, str] = {}
    tpm_file = None
    try:
        for d in todo:
            act.report.info(f"downloading disk {d.disk_id} from {chosen[d.disk_id]}")
            files[d.disk_id] = image_source.download(act.remotes, chosen[d.disk_id])
        if tpm:
            act.report.info(f"downloading the vTPM state from {tpm}")
            tpm_file = image_source.download(act.remotes, tpm)
        with Rollback(act.report) as undo:
            for d in todo:
                if snapshots.take(d.api, d.resource, RESTORE_SAFETY, d.owner):
                    undo.add(f"drop the safety snapshot of {d.resource}",
                             partial(d.api.delete_snapshot, d.resource, RESTORE_SAFETY))
                else:
                    act.report.info(f"{d.resource} keeps the safety snapshot of an interrupted restore")
                # the snapshot has the token now; the definition keeps none
                d.api.set_props(d.resource, {}, delete=[ownership.SNAPSHOT_TOKEN + RESTORE_SAFETY])
            for d in todo:
                undo.add(f"roll {d.resource} back to its state before the restore", partial(back_to_safety, d))
                write_back(act, host, d, files[d.disk_id])
            if tpm_file:
                host_ops.restore_tpm(host, args.vm_dir, tpm_file)
            undo.commit()
    finally:
        for path in [*files.values(), *([tpm_file] if tpm_file else [])]:
            os.unlink(path)
    for d in todo:
        d.api.delete_snapshot(d.resource, RESTORE_SAFETY)
        forget(d.api, d.resource, vm.id, d.owner)
        DigestStore.of(vm).keep_only(d.disk_id, set())
    from . import vm_snapshots
    vm_snapshots.forget_all(act, vm, args.system_ds)      # oned forgets the VM's snapshots now


def back_to_safety(disk: BackupDisk) -> None:
    """The disk as it was before the restore, its size included."""
    refused = disk.api.rollback(disk.resource, RESTORE_SAFETY, keep_size=False)
    if refused:
        raise DriverError(f"{disk.resource} could not be rolled back; its state before the restore is kept as "
                          f"snapshot {RESTORE_SAFETY}: {refused}")


def write_back(act: "Action", host: Host, disk: BackupDisk, path: str) -> None:
    """One downloaded backup file onto the disk: its size first (the disk grows if the backup is
    larger; a larger disk gets zeros after the backup's end, as the disk was then)."""
    from . import image_source
    src = image_source.Source(path, no_decompress=True, md5=False, sha1=False)
    try:
        size = image_source.qcow2_virtual_size(src.head) if src.format == "qcow2" else src.length
        if src.format not in ("raw", "qcow2") or not size:
            raise DriverError(f"backup of disk {disk.disk_id} is {src.format}, not a raw or qcow2 disk image")
        rd = disk.api.resource_definition(disk.resource)
        if rd is None:
            raise DriverError(f"resource {disk.resource} of disk {disk.disk_id} does not exist in LINSTOR")
        if rd.size_kib * 1024 < size:
            disk.api.resize(disk.resource, (size + 1023) // 1024)
        with act.attacher(disk.settings).borrowed(host.name, disk.resource) as device:
            act.report.info(f"restoring disk {disk.disk_id} ({src.format}, {size} bytes) onto {host.name}:{device}")
            image_source.write(host, src, device, disk.settings.staging_dir, thin=False,
                               limit=transfer_limit(size))
            tail = rd.size_kib * 1024 - size
            if tail > 0:                # the disk was larger than the backup: zeros, as it was then
                host_ops.zero(host, device, size, tail, limit=transfer_limit(tail))
    finally:
        src.close()
