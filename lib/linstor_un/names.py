"""Resource and snapshot names, the same as the bash driver's, so existing clusters keep working."""
from __future__ import annotations

import re

from .errors import DriverError

SOURCE_RE = re.compile(r"^(?:[A-Za-z0-9_.-]+:)?/dev/drbd/by-res/([A-Za-z_][A-Za-z0-9_-]{1,47})/[0-9]+$")
NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{1,47}$")
SNAP_RE = re.compile(r"^snapshot-([0-9]+)$")
SNAP_SIZE_RE = re.compile(r"^Aux/one/SNAPSHOT_([0-9]+)/DISK_SIZE$")


def image(image_id: int) -> str:
    return f"one-image-{image_id}"


def image_id(resource: str):
    """The image id of an image's volume `one-image-<id>`, else None."""
    m = re.fullmatch(r"one-image-([0-9]{1,18})", resource)
    return int(m.group(1)) if m else None


def vm_disk(vm_id: int, disk_id: int) -> str:
    return f"one-vm-{vm_id}-disk-{disk_id}"


def checkpoint(vm_id: int) -> str:
    return f"one-vm-{vm_id}-checkpoint"


def snapshot(snap_id: int) -> str:
    return f"snapshot-{snap_id}"


BACKUP_SNAP_RE = re.compile(r"^linstor_un-backup-([0-9]{1,12})-([0-9]{1,9})$")


def backup_snapshot(vm_id: int, increment_id: int) -> str:
    """The snapshot a VM backup reads from, kept as the base of the next increment: never
    `snapshot-<id>` (OpenNebula's disk snapshots), so monitoring and snap_* leave it alone."""
    return f"linstor_un-backup-{vm_id}-{increment_id}"


def backup_snapshot_of(name: str):
    """(vm id, increment id) of a `backup_snapshot` name, else None."""
    m = BACKUP_SNAP_RE.match(name)
    return (int(m.group(1)), int(m.group(2))) if m else None


VM_SNAP_RE = re.compile(r"^linstor_un-vmsnap-([0-9]{1,12})-([0-9]{1,9})$")


def vm_snapshot(vm_id: int, snap_id: int) -> str:
    """A VM snapshot (onevm snapshot-create) on each of the VM's disks, and the hypervisor id oned
    keeps for it: never `snapshot-<id>` nor a backup's, so disk-snapshot monitoring, snap_* and
    backups leave it alone."""
    return f"linstor_un-vmsnap-{vm_id}-{snap_id}"


def vm_snapshot_of(name: str):
    """(vm id, snapshot id) of a `vm_snapshot` name, else None."""
    m = VM_SNAP_RE.match(name)
    return (int(m.group(1)), int(m.group(2))) if m else None


def vm_snapshot_memory(vm_id: int, snap_id: int) -> str:
    """The volume holding a VM snapshot's memory and device state."""
    return f"one-vm-{vm_id}-vmsnap-{snap_id}"


def vm_revert_safety(vm_id: int) -> str:
    """The snapshot of each disk a VM snapshot revert keeps until it is done: the state to go back to."""
    return f"linstor_un-vmrevert-{vm_id}"


def snapshot_id(name: str):
    m = SNAP_RE.match(name)
    return int(m.group(1)) if m else None


def snapshot_size_prop(snap_id: int) -> str:
    return f"Aux/one/SNAPSHOT_{snap_id}/DISK_SIZE"


def snapshot_of_size_prop(key: str):
    """The snapshot id a `snapshot_size_prop` key is for, or None for any other property."""
    m = SNAP_SIZE_RE.match(key) if key.startswith("Aux/one/SNAPSHOT_") else None
    return int(m.group(1)) if m else None


def source(resource: str) -> str:
    """The image SOURCE stored by OpenNebula (bash driver format)."""
    return f"/dev/drbd/by-res/{resource}/0"


def from_source(value: str) -> str:
    """Resource name from a SOURCE: `/dev/drbd/by-res/<res>/0` (optionally `host:`-prefixed) or a bare name."""
    value = value.strip()
    m = SOURCE_RE.match(value)
    if m:
        return m.group(1)
    bare = value.split(":", 1)[1] if ":" in value else value
    if NAME_RE.match(bare):
        return bare
    raise DriverError(f"invalid image SOURCE '{value}': not a linstor_un volume")


def vm_resource(resource: str) -> bool:
    """A VM's own volume (a disk, its checkpoint, a VM snapshot's memory), never an image's."""
    return re.fullmatch(r"one-vm-[0-9]+-(disk-[0-9]+|checkpoint|vmsnap-[0-9]+)", resource) is not None
