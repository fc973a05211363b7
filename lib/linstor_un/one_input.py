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
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .errors import DriverError

Version = tuple[int, int, int]
HOST_RE = re.compile(r"^[A-Za-z0-9_.-]{1,253}$")


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


def integer(value: str, what: str) -> int:
    if not re.fullmatch(r"-?[0-9]{1,18}", str(value)):
        raise DriverError(f"invalid {what} '{value}': expected a number")
    return int(value)


def natural(value: str) -> Optional[int]:
    """A property or attribute that should hold a number: ASCII digits only (str.isdigit() also
    takes '²' and '٣', which int() then refuses or reads as another number), else None."""
    return int(value) if re.fullmatch(r"[0-9]{1,18}", value or "") else None


def snapshot_id(value: str, what: str = "snapshot id") -> int:
    """A snapshot id: 0 or more (oned numbers snapshots from 0; -1 means none, not one to act on)."""
    n = integer(value, what)
    if n < 0:
        raise DriverError(f"invalid {what} '{value}': no snapshot given")
    return n


def valid_host(host: str) -> str:
    if not HOST_RE.match(host) or host.startswith("-"):
        raise DriverError(f"invalid host name '{host}'")
    return host


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

    def of_vm(self, vm_id: int, disk: bool = True) -> "VmPath":
        """This path, checked against the VM oned named in argv (and to be a disk path)."""
        if self.vm_id != vm_id:
            raise DriverError(f"path {self.path} is VM {self.vm_id}'s, not VM {vm_id}'s: nothing was changed")
        if disk and self.disk_id is None:
            raise DriverError(f"'{self.path}' is not a disk path")
        return self


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


@dataclass(frozen=True)
class MigrateArgs:
    src_host: str
    dst_host: str
    vm_dir: str
    vm_id: int
    system_ds: int
    vm_xml: str
    caller: Optional[str]          # set when another TM calls us through migrate_other


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
class BackupArgs:
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
    where = VmPath.parse(argv[0]).of_vm(vm_id, disk=False)
    xml = stdin_reader().strip()
    if not xml.startswith("<"):
        xml = _b64(xml, "the VM XML on stdin") if xml else ""
    if not xml:
        raise DriverError("no VM XML on stdin")
    return BackupArgs(where.host, where.path, tuple(dict.fromkeys(int(i) for i in ids)), argv[2], job,
                      vm_id, ds_id, xml)


@dataclass(frozen=True)
class RestoreArgs:
    """TM restore (6.10+): `<host>:<vm_dir> <vm_id> <backup_image_id> <increment_id> <disk_id>`
    (-1: the last increment, every disk); stdin is empty."""
    host: str
    vm_dir: str
    system_ds: int
    vm_id: int
    image_id: int
    increment_id: int
    disk_id: int


def restore_input(argv: list[str]) -> RestoreArgs:
    if len(argv) != 5:
        raise DriverError("usage: restore <host>:<vm_dir> <vm_id> <backup_image_id> <increment_id> <disk_id>")
    vm_id = integer(argv[1], "VM id")
    where = VmPath.parse(argv[0]).of_vm(vm_id, disk=False)
    numbers = [integer(argv[i], what) for i, what in ((2, "backup image id"), (3, "increment id"), (4, "disk id"))]
    if numbers[0] < 0 or numbers[1] < -1 or numbers[2] < -1:
        raise DriverError(f"invalid restore arguments: {' '.join(argv[1:])}")
    return RestoreArgs(where.host, where.path, where.system_ds, vm_id, *numbers)
