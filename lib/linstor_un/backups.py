"""VM backups (OpenNebula 6.6+): what the TM prebackup(_live) and postbackup(_live) actions do.

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

Which base an increment continues, and the digests: backup_chain. Restoring a backup into a VM:
backup_restore.
"""
from __future__ import annotations

import base64
import json
import os
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from functools import partial
from typing import TYPE_CHECKING, Any, BinaryIO, ContextManager, Iterator, Optional

from . import changed_blocks, host_ops, names, ownership, snapshots
from .backup_chain import (CHAIN_LINK, BackupConfig, BackupDisk, ChainLink, DigestStore, backup_disks,
                           last_increment_date, tidy, trusted_base)
from .errors import DriverError
from .one_api import VmDoc
from .one_input import BackupArgs
from .validate import natural
from .remote import Host
from .report import Report
from .rollback import Rollback

if TYPE_CHECKING:
    from .action import Action

BLOCK = 64 << 10                    # the qcow2 cluster and the unit of change
HOST_PROGRAM = Path(__file__).with_name("backup_host.py")


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


def read_disk(act: "Action", host: Host, disk: BackupDisk, snap: str, base: Optional[str], increment: int,
              previous: Optional[BinaryIO], target: str, sink: BinaryIO, size_bytes: int,
              limits: ReaderLimits = ReaderLimits()) -> None:
    """Write the backup file of one disk from its snapshot; the disk's digests now stream into
    `sink` (the previous ones from `previous`, None where there are none)."""
    mode = "increment" if increment > 0 else "full"
    runs = changed_runs(act, disk, snap, base, previous) if mode == "increment" else None
    if runs is not None:
        mode = "changes"
    with snapshots.restored(disk.ds, host.name, disk.resource, snap, "prebackup",
                            suffix="backup") as device:
        base_read: ContextManager[Optional[str]] = nullcontext(None)
        if mode == "increment" and previous is None and base is not None:
            act.report.info(f"no digests of disk {disk.disk_id} at the last backup here: reading {base} too")
            base_read = snapshots.restored(disk.ds, host.name, disk.resource, base, "prebackup",
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
                           stdin=feed, stdout=sink, timeout=host_ops.transfer_limit(size_bytes) * (2 if base_device else 1))
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
    listed = snapshots.listings(todo)
    bases = {d.disk_id: trusted_base(act, d, cfg, tidy(d, vm.id, base_id, snap, listed[d.resource]), recorded)
             for d in todo}
    link = ChainLink.new(cfg.chain_image if increment > 0 else None)
    backup_dir = f"{args.vm_dir}/backup"
    with Rollback(act.report) as undo:
        host_ops.fresh_dir(host, backup_dir)
        undo.add(f"remove {backup_dir}", lambda: host_ops.remove_dir(host, backup_dir, check=False))
        undo.add(f"delete snapshots {snap}", lambda: [d.api.delete_snapshot(d.resource, snap) for d in todo])
        undo.add(f"clear the marks of {snap}", lambda: unmark(todo, snap))
        mark_for_snapshot(todo, snap, link)
        # the guest is quiet for the snapshot requests alone (one per controller)
        quiet = guest_quiet(host, args.deploy_id, cfg.fs_freeze, act.report) if live else nullcontext()
        with quiet:
            snapshots.together(todo, snap)
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
