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
(`<state>/digests/vm-<id>-<stime>/`, state: /var/lib/one/linstor_un); where they are missing (another front-end, a lost disk) the
base snapshot is read instead, and without either, an increment holds the whole disk (correct,
only larger).
"""
from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Optional

from . import disks, host_ops, names, ownership, snapshots
from .errors import DriverError
from .linstor_api import Linstor, Snapshot
from .one_api import VmDoc
from .one_input import BackupArgs, natural
from .ownership import Owner
from .remote import Host
from .report import Report
from .rollback import Rollback

if TYPE_CHECKING:
    from .action import Action

BLOCK = 64 << 10                    # the qcow2 cluster and the unit of change
HOST_PROGRAM = Path(__file__).with_name("backup_host.py")


@dataclass(frozen=True)
class BackupConfig:
    """The VM's BACKUPS/BACKUP_CONFIG, as oned fills it in."""
    incremental: bool               # MODE=INCREMENT (FULL when absent)
    last_increment: int             # LAST_INCREMENT_ID: -1 when no chain was started (or it was reset)
    fs_freeze: str                  # NONE (oned's default), AGENT, SUSPEND

    @classmethod
    def of(cls, vm: VmDoc) -> "BackupConfig":
        cfg = "BACKUPS/BACKUP_CONFIG/"
        mode = vm.text(cfg + "MODE", "FULL").upper() or "FULL"
        if mode not in ("FULL", "INCREMENT"):
            raise DriverError(f"unknown BACKUP_CONFIG MODE '{mode}': FULL or INCREMENT")
        last = vm.text(cfg + "LAST_INCREMENT_ID", "-1") or "-1"
        if last != "-1" and natural(last) is None:
            raise DriverError(f"invalid BACKUP_CONFIG LAST_INCREMENT_ID '{last}'")
        return cls(mode == "INCREMENT", int(last), vm.text(cfg + "FS_FREEZE", "NONE").upper())

    @property
    def increment_id(self) -> int:
        """The number oned gives this backup's files: 0 for a full one (also a chain's first)."""
        return self.last_increment + 1 if self.incremental and self.last_increment >= 0 else 0

    @property
    def base_id(self) -> Optional[int]:
        """The backup this increment is a delta to."""
        return self.last_increment if self.increment_id > 0 else None


@dataclass(frozen=True)
class BackupDisk:
    disk_id: int
    resource: str
    owner: Owner                    # the VM disk: the chain is the VM's, also on a persistent image
    api: Linstor
    settings: object


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

    def load(self, disk_id: int, increment: Optional[int]) -> bytes:
        if increment is None:
            return b""
        try:
            return self._file(disk_id, increment).read_bytes()
        except OSError:
            return b""

    def save(self, disk_id: int, increment: int, digests: bytes, report: Report) -> None:
        """Kept if the front-end lets us: without them the next increment reads its base
        snapshot as well (slower, as exact)."""
        tmp = self._file(disk_id, increment).with_suffix(".part")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(digests)
            os.replace(tmp, self._file(disk_id, increment))
        except OSError as err:
            report.info(f"could not keep the block digests of disk {disk_id} in {self.root} ({err.strerror}): "
                        f"the next increment reads the base snapshot too")

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
    out = []
    for disk_id in disk_ids:
        res, disk = disks.resource_of(vm, disk_id)
        ds = natural(disk.get("DATASTORE_ID")) if disk.image_id is not None else None
        settings = act.settings(system_ds if ds is None else ds)
        out.append(BackupDisk(disk_id, res, disks.owner_of(vm, disk_id), act.linstor(settings), settings))
    return out


def mine(snap: Snapshot, vm_id: int, owner: Owner) -> Optional[int]:
    """The increment a backup snapshot of this very VM disk is for, else None."""
    parsed = names.backup_snapshot_of(snap.name)
    if parsed is None or parsed[0] != vm_id or not ownership.snapshot_is_mine(snap, owner):
        return None
    return parsed[1]


def tidy(disk: BackupDisk, vm_id: int, keep: Optional[int], taking: str) -> bool:
    """Remove this VM disk's backup snapshots except `keep`; True if `keep` is there. A snapshot of
    the name about to be taken that is not ours stops the backup before anything happens."""
    kept = False
    for snap in disk.api.snapshots(disk.resource):
        inc = mine(snap, vm_id, disk.owner)
        if inc is None:
            if snap.name == taking:
                raise DriverError(f"snapshot {taking} of {disk.resource} exists and was not taken for "
                                  f"{disk.owner.describe()} by linstor_un: nothing was changed. Delete it if "
                                  f"nobody needs it (linstor snapshot delete {disk.resource} {taking}) and retry")
            continue
        if inc == keep:
            kept = True
        else:
            disk.api.delete_snapshot(disk.resource, snap.name)
    return kept


def forget(api: Linstor, res: str, vm_id: int, owner: Owner, snaps: Optional[list[Snapshot]] = None) -> None:
    """The VM no longer backs this volume up (detached, terminated, restored): its chain goes
    (`snaps`: the listing the caller just read)."""
    for snap in api.snapshots(res) if snaps is None else snaps:
        if mine(snap, vm_id, owner) is not None:
            api.delete_snapshot(res, snap.name)


def snapshot_together(group: list[BackupDisk], snap: str) -> None:
    """One request for all disks of one controller, each snapshot carrying its owner's token."""
    api = group[0].api
    for d in group:
        api.set_props(d.resource, {ownership.SNAPSHOT_TOKEN + snap: d.owner.snapshot_token(snap)})
    try:
        api.create_snapshots([d.resource for d in group], snap)
    finally:
        for d in group:
            api.set_props(d.resource, {}, delete=[ownership.SNAPSHOT_TOKEN + snap])


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


def read_disk(act: "Action", host: Host, disk: BackupDisk, snap: str, base: Optional[str], increment: int,
              previous: bytes, target: str) -> bytes:
    """Write the backup file of one disk from its snapshot; returns the disk's digests now."""
    attacher = act.attacher(disk.settings)
    mode = "increment" if increment > 0 else "full"
    with snapshots.restored(disk.api, attacher, host.name, disk.resource, snap, "prebackup",
                            suffix="backup") as device:
        base_read = nullcontext(None)
        if mode == "increment" and not previous and base is not None:
            act.report.info(f"no digests of disk {disk.disk_id} at the last backup here: reading {base} too")
            base_read = snapshots.restored(disk.api, attacher, host.name, disk.resource, base, "prebackup",
                                           suffix="backup-base")
        elif mode == "increment" and not previous:
            act.report.info(f"disk {disk.disk_id} has no base at the last backup: the increment holds all of it")
        with base_read as base_device:
            out = host.run(["python3", "-c", HOST_PROGRAM.read_text(), mode, device, target, str(BLOCK),
                            *([base_device] if base_device else [])],
                           f"back up disk {disk.disk_id} ({disk.resource}) to {target}", stdin=previous, bulk=True)
    counts = out.stderr.decode(errors="replace").strip().splitlines()[-1:]
    try:
        c = json.loads(counts[0]) if counts else {}
        act.report.info(f"disk {disk.disk_id}: {c.get('changed', 0)} of {c.get('blocks', 0)} blocks written"
                        f"{', %d zeroed' % c['zeroed'] if c.get('zeroed') else ''}, {c.get('file_bytes', 0)} bytes "
                        f"in {c.get('seconds', 0)} s")
    except ValueError:
        pass
    if len(out.stdout) % 16:
        raise DriverError(f"back up disk {disk.disk_id}: the host returned malformed digests")
    return out.stdout


def take(act: "Action", args: BackupArgs, live: bool) -> None:
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
    have_base = {d.disk_id: tidy(d, vm.id, base_id, snap) for d in todo}
    backup_dir = f"{args.vm_dir}/backup"
    groups: dict[int, list[BackupDisk]] = {}
    for d in todo:
        groups.setdefault(id(d.api), []).append(d)
    with Rollback(act.report) as undo:
        host_ops.fresh_dir(host, backup_dir)
        undo.add(f"remove {backup_dir}", lambda: host_ops.remove_dir(host, backup_dir, check=False))
        undo.add(f"delete snapshots {snap}", lambda: [d.api.delete_snapshot(d.resource, snap) for d in todo])
        quiet = guest_quiet(host, args.deploy_id, cfg.fs_freeze, act.report) if live else nullcontext()
        with quiet:
            for group in groups.values():
                snapshot_together(group, snap)
        for d in todo:
            previous = store.load(d.disk_id, base_id)
            digests = read_disk(act, host, d, snap, base if have_base[d.disk_id] else None, increment,
                                previous, f"{backup_dir}/disk.{d.disk_id}.{increment}")
            if cfg.incremental:
                store.save(d.disk_id, increment, digests, act.report)
                undo.add(f"forget digests of disk {d.disk_id}",
                         lambda d=d: store.keep_only(d.disk_id, {base_id} if base_id is not None else set()))
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
    temporary resources a killed prebackup may have left."""
    vm = VmDoc.parse(args.vm_xml)
    host_ops.remove_dir(act.hosts[args.host], f"{args.vm_dir}/backup", check=False)
    for d in backup_disks(act, vm, args.disk_ids, args.system_ds):
        found = d.api.definitions(d.resource, f"{d.resource}-backup", f"{d.resource}-backup-base")
        source = found.pop(d.resource)
        for rd in found.values():
            if rd is not None:
                ownership.clear_temporary(d.api, rd, d.resource, source.props if source else None, reuse=False)


BACKUP_IMAGE = "6"                  # IMAGE/TYPE of a backup image (6.6+)
RESTORE_SAFETY = "linstor_un-restore-safety"


def backup_urls(act: "Action", vm: VmDoc, image, increment_id: int) -> dict[int, str]:
    """disk id -> URL of the backup files (up to `increment_id`, -1: the last), as the backup
    datastore's own `ls -i` lists them (src/tm_mad/lib/datastore.rb hands it the datastore, the
    VM and the image, plain XML on stdin)."""
    from lxml import etree
    ds = act.one.datastore(natural(image.text("DATASTORE_ID")) or 0)
    ds_mad = ds.text("DS_MAD")
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", ds_mad):
        raise DriverError(f"backup datastore {ds.id} has an invalid DS_MAD '{ds_mad}'")
    ls = act.remotes / "datastore" / ds_mad / "ls"
    if not os.access(ls, os.X_OK):
        raise DriverError(f"backup datastore {ds.id} ({ds_mad}) has no 'ls' action: OpenNebula 6.10+ is needed")
    data = "<DS_DRIVER_ACTION_DATA>\n" + "\n".join(
        etree.tostring(doc.root, encoding="unicode") for doc in (ds, vm, image)) + "\n</DS_DRIVER_ACTION_DATA>\n"
    done = subprocess.run([str(ls), "-i", str(increment_id)], input=data, capture_output=True, text=True)
    if done.returncode != 0:
        raise DriverError(f"cannot list backup image {image.id}: {done.stderr.strip() or 'ls failed'}")
    try:
        listed = json.loads(done.stdout)
        return {int(k): str(v) for k, v in listed.items()}
    except (ValueError, AttributeError, TypeError):
        raise DriverError(f"cannot list backup image {image.id}: unexpected answer {done.stdout[:200]!r}")


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
    chosen = {i: u for i, u in urls.items() if args.disk_id in (-1, i)}
    if not chosen:
        raise DriverError(f"backup image {args.image_id} holds no disk {args.disk_id}: nothing was changed")
    todo = backup_disks(act, vm, tuple(sorted(chosen)), args.system_ds)
    host = act.hosts[args.host]
    files: dict[int, str] = {}
    try:
        for d in todo:
            act.report.info(f"downloading disk {d.disk_id} from {chosen[d.disk_id]}")
            files[d.disk_id] = image_source.download(act.remotes, chosen[d.disk_id])
        with Rollback(act.report) as undo:
            for d in todo:
                if snapshots.take(d.api, d.resource, RESTORE_SAFETY, d.owner):
                    undo.add(f"drop the safety snapshot of {d.resource}",
                             lambda d=d: d.api.delete_snapshot(d.resource, RESTORE_SAFETY))
                else:
                    act.report.info(f"{d.resource} keeps the safety snapshot of an interrupted restore")
            for d in todo:
                undo.add(f"roll {d.resource} back to its state before the restore",
                         lambda d=d: back_to_safety(d))
                write_back(act, host, d, files[d.disk_id])
            undo.commit()
    finally:
        for path in files.values():
            os.unlink(path)
    for d in todo:
        d.api.delete_snapshot(d.resource, RESTORE_SAFETY)
        forget(d.api, d.resource, vm.id, d.owner)
        DigestStore.of(vm).keep_only(d.disk_id, set())


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
            image_source.write(host, src, device, disk.settings.staging_dir, thin=False)
            tail = rd.size_kib * 1024 - size
            if tail > 0:                # the disk was larger than the backup: zeros, as it was then
                host_ops.zero(host, device, size, tail)
    finally:
        src.close()
