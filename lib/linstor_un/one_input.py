"""What oned hands an action: argv and stdin, for OpenNebula 5.6 -> 7.4.

Facts used (reference/opennebula-interface.md): TM arguments are `host:path` pairs and ids; system
datastore paths look like `<DATASTORE_LOCATION>/<sys_ds>/<vm>/disk.<n>` and may hold `//`; DS
actions get `<b64> <id>`, `- <id>` + stdin, or `<id>` + stdin; pre/post/failmigrate get the VM
template in argv[6] (<= 5.8) or on stdin; VMM local actions get base64 on stdin.
"""
from __future__ import annotations

import base64
import binascii
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, TypeVar

from .errors import DriverError
from .names import from_source
from .validate import integer, natural, snapshot_id, valid_domain, valid_host

Version = tuple[int, int, int]
T = TypeVar("T")


def remotes_dir(script: Optional[str] = None) -> Path:
    """`<remotes>` from an action file at `<remotes>/<kind>/<driver>/<action>` (no symlink resolving)."""
    return Path(os.path.abspath(script or sys.argv[0])).parents[2]


def read_version(remotes: Path) -> Version:
    try:
        text = (remotes / "VERSION").read_text().strip()
        parts = [int(x) for x in re.findall(r"[0-9]+", text)[:3]]
        return tuple(parts + [0] * (3 - len(parts)))  # type: ignore[return-value]
    except (OSError, ValueError):
        return (7, 0, 0)            # newest conventions when the file is missing


def clean_path(path: str) -> str:
    """Collapse `//` and a trailing `/` like OpenNebula's fix_dir_slashes; refuse `..`."""
    if not path.startswith("/"):
        raise DriverError(f"invalid path '{path}': not absolute")
    parts = [p for p in path.split("/") if p]
    if any(p in ("..", ".") for p in parts) or any(c in path for c in "\n\0"):
        raise DriverError(f"invalid path '{path}'")
    return "/" + "/".join(parts)


@dataclass(frozen=True)
class HostPath:
    host: str
    path: str

    @classmethod
    def parse(cls, arg: str) -> "HostPath":
        host, sep, path = arg.partition(":")
        if not sep:
            raise DriverError(f"invalid argument '{arg}': expected host:path")
        return cls(valid_host(host), clean_path(path))


@dataclass(frozen=True)
class VmPath:
    """A path in a system datastore: <location>/<sys_ds>/<vm>[/disk.<n>]."""
    host: str
    path: str
    system_ds: int
    vm_id: int
    disk_id: Optional[int]

    @property
    def vm_dir(self) -> str:
        return self.path if self.disk_id is None else os.path.dirname(self.path)

    @classmethod
    def parse(cls, arg: str) -> "VmPath":
        hp = HostPath.parse(arg)
        parts = hp.path.split("/")
        match = re.fullmatch(r"disk\.([0-9]+)", parts[-1])
        if match:
            ds, vm, disk = parts[-3], parts[-2], int(match.group(1))
        else:
            ds, vm, disk = parts[-2], parts[-1], None
        if natural(ds) is None or natural(vm) is None:
            raise DriverError(f"invalid system datastore path '{hp.path}'")
        return cls(hp.host, hp.path, int(ds), int(vm), disk)

    def in_vm(self, vm_id: int) -> "VmPath":
        """This path, checked against the VM oned named in argv."""
        if self.vm_id != vm_id:
            raise DriverError(f"path {self.path} is VM {self.vm_id}'s, not VM {vm_id}'s: nothing was changed")
        return self

    def of_vm(self, vm_id: int) -> "DiskPath":
        """This path, checked against the VM oned named in argv and to be a disk path."""
        self.in_vm(vm_id)
        if self.disk_id is None:
            raise DriverError(f"'{self.path}' is not a disk path")
        return DiskPath(self.host, self.path, self.system_ds, self.vm_id, self.disk_id)


@dataclass(frozen=True)
class DiskPath(VmPath):
    """A VM disk's path: <location>/<sys_ds>/<vm>/disk.<n>."""
    disk_id: int


def _b64(text: str, what: str) -> str:
    try:
        return base64.b64decode("".join(text.split()), validate=True).decode()
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise DriverError(f"{what} is not valid base64")


def read_stdin() -> str:
    try:
        return sys.stdin.read()
    except (OSError, ValueError):
        return ""


def ds_input(argv: list[str], stdin_reader=read_stdin) -> tuple[str, int]:
    """DS actions (and the system-DS monitor, and export): (DS_DRIVER_ACTION_DATA xml, id)."""
    if len(argv) == 1:
        return _b64(stdin_reader(), "the driver action data on stdin"), integer(argv[0], "id")
    if len(argv) >= 2 and argv[0] == "-":
        return _b64(stdin_reader(), "the driver action data on stdin"), integer(argv[1], "id")
    if len(argv) >= 2:
        return _b64(argv[0], "the driver action data"), integer(argv[1], "id")
    raise DriverError("missing arguments: expected the driver action data and an id")


class OfVm:
    """A call about one VM: a failure names it (Report.object_id)."""
    vm_id: int

    @property
    def object_id(self) -> int:
        return self.vm_id


@dataclass(frozen=True)
class MigrateArgs(OfVm):
    src_host: str
    dst_host: str
    vm_dir: str
    vm_id: int
    system_ds: int
    vm_xml: str
    caller: Optional[str]          # set when another TM calls us through migrate_other

    @classmethod
    def parse(cls, argv: list[str]) -> "MigrateArgs":
        return migrate_input(argv)


def migrate_input(argv: list[str], stdin_reader=read_stdin) -> MigrateArgs:
    if len(argv) < 5:
        raise DriverError("missing arguments: expected src_host dst_host vm_dir vm_id ds_id")
    src, dst, vm_dir, vm_id, ds_id = argv[:5]
    rest = argv[5:]
    vm_xml = None
    caller = None
    if rest:
        try:      # 5.6/5.8: argv[6] is the template, argv[7] the caller
            decoded = base64.b64decode(rest[0], validate=True).decode()
        except (binascii.Error, ValueError, UnicodeDecodeError):
            decoded = ""
        if decoded.lstrip().startswith("<VM>"):
            vm_xml = decoded
            caller = rest[1] if len(rest) > 1 and rest[1] else None
        else:
            caller = rest[0] or None
    if vm_xml is None:
        data = stdin_reader().strip()
        vm_xml = _b64(data, "the VM template on stdin") if data else ""
    if caller is not None and not re.fullmatch(r"[A-Za-z0-9_.-]+", caller):
        raise DriverError(f"invalid caller TM '{caller}'")
    return MigrateArgs(valid_host(src), valid_host(dst), clean_path(vm_dir), integer(vm_id, "VM id"),
                       integer(ds_id, "datastore id"), vm_xml, caller)


def vmm_stdin(stdin_reader=read_stdin) -> str:
    """VMM local actions: base64 (wrapped before 5.12) of VMM_DRIVER_ACTION_DATA; raw XML accepted."""
    data = stdin_reader().strip()
    if data.startswith("<"):
        return data
    return _b64(data, "the VMM driver action data on stdin")


@dataclass(frozen=True)
class BackupArgs(OfVm):
    """TM prebackup[_live] / postbackup[_live] (6.6+): `<host>:<vm_dir> <disk_ids a:b> <deploy_id>
    [<bj_id>|-] <vm_id> <sys_ds>` (the backup job id from 6.8 on) and the VM XML, raw, on stdin."""
    host: str
    vm_dir: str
    disk_ids: tuple[int, ...]
    deploy_id: str
    job_id: Optional[int]
    vm_id: int
    system_ds: int
    vm_xml: str

    @classmethod
    def parse(cls, argv: list[str]) -> "BackupArgs":
        return backup_input(argv)


def backup_input(argv: list[str], stdin_reader=read_stdin) -> BackupArgs:
    if len(argv) not in (5, 6):
        raise DriverError("usage: <host>:<vm_dir> <disk_ids> <deploy_id> [<backup_job_id>] <vm_id> <sys_ds_id>")
    job = None
    if len(argv) == 6:
        job = None if argv[3] == "-" else integer(argv[3], "backup job id")
    vm_id, ds_id = integer(argv[-2], "VM id"), integer(argv[-1], "datastore id")
    ids = argv[1].split(":") if argv[1] else []
    if not ids or any(natural(i) is None for i in ids):
        raise DriverError(f"invalid disk ids '{argv[1]}': expected numbers joined with ':'")
    if not re.fullmatch(r"[A-Za-z0-9_.:-]{1,128}", argv[2]):
        raise DriverError(f"invalid deploy id '{argv[2]}'")
    where = VmPath.parse(argv[0]).in_vm(vm_id)
    xml = stdin_reader().strip()
    if not xml.startswith("<"):
        xml = _b64(xml, "the VM XML on stdin") if xml else ""
    if not xml:
        raise DriverError("no VM XML on stdin")
    return BackupArgs(where.host, where.path, tuple(dict.fromkeys(int(i) for i in ids)), argv[2], job,
                      vm_id, ds_id, xml)


@dataclass(frozen=True)
class RestoreArgs(OfVm):
    """TM restore (6.10+): `<host>:<vm_dir> <vm_id> <backup_image_id> <increment_id> <disk_id>`
    (-1: the last increment, every disk); stdin is empty."""
    host: str
    vm_dir: str
    system_ds: int
    vm_id: int
    image_id: int
    increment_id: int
    disk_id: int

    @classmethod
    def parse(cls, argv: list[str]) -> "RestoreArgs":
        return restore_input(argv)


def restore_input(argv: list[str]) -> RestoreArgs:
    if len(argv) != 5:
        raise DriverError("usage: restore <host>:<vm_dir> <vm_id> <backup_image_id> <increment_id> <disk_id>")
    vm_id = integer(argv[1], "VM id")
    where = VmPath.parse(argv[0]).in_vm(vm_id)
    numbers = [integer(argv[i], what) for i, what in ((2, "backup image id"), (3, "increment id"), (4, "disk id"))]
    if numbers[0] < 0 or numbers[1] < -1 or numbers[2] < -1:
        raise DriverError(f"invalid restore arguments: {' '.join(argv[1:])}")
    return RestoreArgs(where.host, where.path, where.system_ds, vm_id, *numbers)


# ---- oned's call signatures ----------------------------------------------------------------------
# Each action file names its signature: `run(main, DiskSnapshotArgs.parse)`. run() parses argv
# (and stdin) before main runs, reports the object (a VM, an image) the failure is about, and main
# gets the typed arguments. A parse error after the object id is known still names the object.

def _about(object_id: int, build: Callable[[], T]) -> T:
    try:
        return build()
    except DriverError as err:
        err.object_id = object_id              # type: ignore[attr-defined]
        raise


def _need(argv: list[str], count: int, usage: str) -> None:
    if len(argv) < count:
        raise DriverError(f"usage: {os.path.basename(sys.argv[0])} {usage}")


@dataclass(frozen=True)
class VmmArgs(OfVm):
    """A VMM override run on the front-end (-l): the action's parameters, then the VM id and host
    one_vmm_exec.rb appends to a local action's (OpenNebulaDriver#do_action); stdin: base64 of
    VMM_DRIVER_ACTION_DATA (wrapped before 5.12).
    save: `<deploy_id> <checkpoint> <host> <vm_id> <host>`; restore: `<checkpoint> <host>
    <deploy_id> <vm_id> <host>`; snapshot_create: `<deploy_id> <snapshot id> <vm_id> <host>`;
    snapshot_revert, snapshot_delete: `<deploy_id> <hypervisor id> <vm_id> <host>`."""
    domain: str
    target: str                     # the checkpoint path, or the snapshot's id / hypervisor id
    host: str
    vm_id: int
    argv: tuple[str, ...]           # as given: the stock script gets the same when the VM is not ours
    xml: str = field(repr=False, default="")

    @classmethod
    def _made(cls, argv: list[str], domain: str, target: str, host: str, vm_id: str) -> "VmmArgs":
        vid = integer(vm_id, "VM id")
        return _about(vid, lambda: cls(valid_domain(domain), target, valid_host(host), vid, tuple(argv),
                                       vmm_stdin()))

    @classmethod
    def save(cls, argv: list[str]) -> "VmmArgs":
        _need(argv, 4, "<deploy_id> <checkpoint> <host> <vm_id> [host]")
        return cls._made(argv, argv[0], argv[1], argv[2], argv[3])

    @classmethod
    def restore(cls, argv: list[str]) -> "VmmArgs":
        _need(argv, 4, "<checkpoint> <host> <deploy_id> <vm_id> [host]")
        return cls._made(argv, argv[2], argv[0], argv[1], argv[3])

    @classmethod
    def snapshot(cls, argv: list[str]) -> "VmmArgs":
        _need(argv, 4, "<deploy_id> <snapshot> <vm_id> <host>")
        return cls._made(argv, argv[0], argv[1], argv[3], argv[2])


@dataclass(frozen=True)
class ImageDiskArgs(OfVm):
    """TM clone, ln: `<fe>:<SOURCE> <host>:<sys_path>/<vm>/disk.<n> <vm_id> <image_ds_id>`."""
    source: str                     # the image's resource
    source_arg: str
    disk: "DiskPath"
    vm_id: int
    ds_id: int

    @classmethod
    def parse(cls, argv: list[str]) -> "ImageDiskArgs":
        _need(argv, 4, "<fe:SOURCE> <host:path> <vm_id> <ds_id>")
        source = from_source(argv[0])
        vm_id = integer(argv[2], "VM id")
        return _about(vm_id, lambda: cls(source, argv[0], VmPath.parse(argv[1]).of_vm(vm_id), vm_id,
                                         integer(argv[3], "datastore id")))


@dataclass(frozen=True)
class DiskImageArgs(OfVm):
    """TM mvds: `<host>:<sys_path>/<vm>/disk.<n> <SOURCE> <vm_id> <image_ds_id>`; TM cpds:
    `<host>:<sys_path>/<vm>/disk.<n> <new image SOURCE> <snap_id|-1> <vm_id> <image_ds_id>`."""
    disk: "DiskPath"
    image: str                      # the image's resource
    image_arg: str
    vm_id: int
    ds_id: int
    snap_id: int = -1               # cpds: -1 copies the disk itself

    @classmethod
    def parse(cls, argv: list[str]) -> "DiskImageArgs":
        _need(argv, 4, "<host:path> <SOURCE> <vm_id> <ds_id>")
        image = from_source(argv[1])
        vm_id = integer(argv[2], "VM id")
        return _about(vm_id, lambda: cls(VmPath.parse(argv[0]).of_vm(vm_id), image, argv[1], vm_id,
                                         integer(argv[3], "datastore id")))

    @classmethod
    def parse_saveas(cls, argv: list[str]) -> "DiskImageArgs":
        _need(argv, 5, "<host:path> <SOURCE> <snap_id> <vm_id> <ds_id>")
        image = from_source(argv[1])
        snap_id, vm_id = integer(argv[2], "snapshot id"), integer(argv[3], "VM id")
        return _about(vm_id, lambda: cls(VmPath.parse(argv[0]).of_vm(vm_id), image, argv[1], vm_id,
                                         integer(argv[4], "datastore id"), snap_id))


@dataclass(frozen=True)
class DiskSnapshotArgs(OfVm):
    """TM snap_create(_live), snap_delete, snap_revert: `<host>:<sys_path>/<vm>/disk.<n> <snap_id>
    <vm_id> <ds_id>`; TM resize: `<host>:<...>/disk.<n> <size_mb> <vm_id> <ds_id>` (`number`)."""
    disk: "DiskPath"
    number: int                     # the snapshot id (0 or more), or resize's new size in MB
    vm_id: int
    ds_id: int

    @property
    def snap_id(self) -> int:
        return self.number

    @classmethod
    def parse(cls, argv: list[str]) -> "DiskSnapshotArgs":
        _need(argv, 4, "<host:path> <snap_id> <vm_id> <ds_id>")
        snap, vm_id = snapshot_id(argv[1]), integer(argv[2], "VM id")
        return _about(vm_id, lambda: cls(VmPath.parse(argv[0]).of_vm(vm_id), snap, vm_id,
                                         integer(argv[3], "datastore id")))

    @classmethod
    def parse_resize(cls, argv: list[str]) -> "DiskSnapshotArgs":
        _need(argv, 4, "<host:path> <size_mb> <vm_id> <ds_id>")
        size, vm_id = integer(argv[1], "size"), integer(argv[2], "VM id")
        return _about(vm_id, lambda: cls(VmPath.parse(argv[0]).of_vm(vm_id), size, vm_id,
                                         integer(argv[3], "datastore id")))


@dataclass(frozen=True)
class VolatileArgs(OfVm):
    """TM mkimage: `<size_mb> <format> <host>:<sys_path>/<vm>/disk.<n> <vm_id> <system_ds_id>`;
    TM mkswap: the same without the format."""
    size_mb: int
    format: str
    disk: "DiskPath"
    vm_id: int

    @classmethod
    def parse(cls, argv: list[str]) -> "VolatileArgs":
        _need(argv, 5, "<size> <format> <host:path> <vm_id> <ds_id>")
        size, vm_id = integer(argv[0], "size"), integer(argv[3], "VM id")
        return _about(vm_id, lambda: cls(size, argv[1], VmPath.parse(argv[2]).of_vm(vm_id), vm_id))

    @classmethod
    def parse_swap(cls, argv: list[str]) -> "VolatileArgs":
        _need(argv, 4, "<size> <host:path> <vm_id> <ds_id>")
        size, vm_id = integer(argv[0], "size"), integer(argv[2], "VM id")
        return _about(vm_id, lambda: cls(size, "swap", VmPath.parse(argv[1]).of_vm(vm_id), vm_id))


@dataclass(frozen=True)
class VmDirArgs(OfVm):
    """TM delete: `<host>:<sys_path>/<vm>[/disk.<n>] <vm_id> <ds_id>`; TM mv: `<src_host>:<path>
    <dst_host>:<path> <vm_id> <ds_id>` (`dst`)."""
    target: "VmPath"
    vm_id: int
    ds_id: int
    dst: Optional["VmPath"] = None

    @classmethod
    def parse(cls, argv: list[str]) -> "VmDirArgs":
        _need(argv, 3, "<host:path> <vm_id> <ds_id>")
        target = VmPath.parse(argv[0])
        vm_id = integer(argv[1], "VM id")

        def build() -> "VmDirArgs":
            if target.vm_id != vm_id:
                raise DriverError(f"path {target.path} does not belong to VM {vm_id}")
            return cls(target, vm_id, integer(argv[2], "datastore id"))
        return _about(vm_id, build)

    @classmethod
    def parse_move(cls, argv: list[str]) -> "VmDirArgs":
        _need(argv, 4, "<src_host:path> <dst_host:path> <vm_id> <ds_id>")
        vm_id = integer(argv[2], "VM id")
        return _about(vm_id, lambda: cls(VmPath.parse(argv[0]).in_vm(vm_id), vm_id,
                                         integer(argv[3], "datastore id"),
                                         VmPath.parse(argv[1]).in_vm(vm_id)))


@dataclass(frozen=True)
class ContextArgs(OfVm):
    """TM context: `<context.sh> [<file>[:<name>] | <url> ...] <host>:<sys_path>/<vm>/disk.<n>
    <vm_id> <ds_id>`."""
    files: list[str]
    disk: "DiskPath"
    vm_id: int

    @classmethod
    def parse(cls, argv: list[str]) -> "ContextArgs":
        _need(argv, 4, "<context.sh> [files...] <host:path> <vm_id> <ds_id>")
        vm_id = integer(argv[-2], "VM id")
        return _about(vm_id, lambda: cls(list(argv[:-3]), VmPath.parse(argv[-3]).of_vm(vm_id), vm_id))


@dataclass(frozen=True)
class DsRequest:
    """A DS action: the DS_DRIVER_ACTION_DATA document and the id oned names (ds_input). oned's
    DS MAD names the object in its own reply: no object id in the driver's messages."""
    xml: str
    id: int

    @classmethod
    def parse(cls, argv: list[str]) -> "DsRequest":
        return cls(*ds_input(argv))
