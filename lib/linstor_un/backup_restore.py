"""A backup restored into its VM (TM restore, OpenNebula 6.10+): the backup datastore lists the
files of the increment asked for, each is downloaded to the front-end and written onto its disk;
every disk is first snapshotted (`linstor_un-restore-safety`) and rolled back to it if any step
fails."""
from __future__ import annotations

import json
import os
import re
import subprocess
from functools import partial
from typing import TYPE_CHECKING

from . import host_ops, ownership, snapshots
from .backup_chain import BackupDisk, DigestStore, backup_disks, forget
from .errors import DriverError
from .one_api import VmDoc
from .validate import natural
from .remote import Host
from .rollback import Rollback

if TYPE_CHECKING:
    from .action import Action

LS_LIMIT = 300                      # seconds a backup datastore's `ls` may take
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
        with disk.ds.attacher.borrowed(host.name, disk.resource) as device:
            act.report.info(f"restoring disk {disk.disk_id} ({src.format}, {size} bytes) onto {host.name}:{device}")
            image_source.write(host, src, device, disk.settings.staging_dir, thin=False,
                               limit=host_ops.transfer_limit(size))
            tail = rd.size_kib * 1024 - size
            if tail > 0:                # the disk was larger than the backup: zeros, as it was then
                host_ops.zero(host, device, size, tail, limit=host_ops.transfer_limit(tail))
    finally:
        src.close()
