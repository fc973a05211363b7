"""Which LINSTOR resource backs a VM disk, and the Aux/one properties that tie them together."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from . import names
from .context import OnDatastore
from .one_api import DiskInfo, VmDoc
from .validate import natural
from .ownership import Owner

if TYPE_CHECKING:
    from .action import Action
    from .context import Datastore

VM_ID, DS_ID, DISK_ID = "Aux/one/VM_ID", "Aux/one/DS_ID", "Aux/one/DISK_ID"
OWNER_PROPS = [VM_ID, DS_ID, DISK_ID]
DRIVER = "linstor_un"


@dataclass(frozen=True)
class VmVolume(OnDatastore):
    """A linstor_un disk of a VM, as the VM-wide actions (backups, VM snapshots) act on it."""
    disk_id: int
    resource: str
    owner: Owner                    # the VM disk: what the VM takes of it is the VM's, also on a persistent image
    ds: "Datastore"                 # its datastore (an image's, or the system datastore's)


def linstor_disks(vm: VmDoc) -> list[DiskInfo]:
    """The VM's disks that are linstor_un volumes (a volatile disk has its system datastore's TM)."""
    return [d for d in vm.disks() if d.get("TM_MAD") == DRIVER and d.get("TYPE").upper() != "CONTEXT"]


def read_only(disk: DiskInfo) -> bool:
    return disk.get("READONLY").upper() == "YES" or disk.get("TYPE").upper() == "CDROM"


def volumes(act: "Action", vm: VmDoc, disk_ids: Sequence[int], system_ds: int) -> list[VmVolume]:
    """The volumes of these disks, each with the LINSTOR session of its datastore."""
    out = []
    for disk_id in disk_ids:
        res, disk = resource_of(vm, disk_id)
        ds = natural(disk.get("DATASTORE_ID")) if disk.image_id is not None else None
        out.append(VmVolume(disk_id, res, owner_of(vm, disk_id), act.datastore(system_ds if ds is None else ds)))
    return out


def resource_of(vm: VmDoc, disk_id: int) -> tuple[str, DiskInfo]:
    """A cloned or volatile disk has its own resource; a persistent/CDROM disk is the image's."""
    disk = vm.disk(disk_id)
    if disk.cloned:
        return names.vm_disk(vm.id, disk_id), disk
    return names.from_source(disk.get("SOURCE")), disk


def owner_props(vm_id: int, system_ds: int, disk_id: int) -> dict:
    return {VM_ID: str(vm_id), DS_ID: str(system_ds), DISK_ID: str(disk_id)}


def owned_by(props: dict, vm_id: int, disk_id: int) -> bool:
    return props.get(VM_ID) == str(vm_id) and props.get(DISK_ID) == str(disk_id)


def owner_of(vm: VmDoc, disk_id: int) -> Owner:
    """The VM disk as the owner of its own volume (this incarnation of the VM)."""
    return Owner.vm_disk(vm.id, vm.text("STIME"), disk_id)


def snapshot_owner(one, vm: VmDoc, disk_id: int) -> Owner:
    """Whose a disk's snapshots are: a VM's own disk's are that VM's; a persistent image's are the
    image's (they outlive the VM, and the next VM reverts to them)."""
    disk = vm.disk(disk_id)
    if disk.cloned or disk.image_id is None:
        return owner_of(vm, disk_id)
    return Owner.image(disk.image_id, one.image(disk.image_id).text("REGTIME"))
