"""Volatile disks (mkimage, mkswap): create, place, link and format a VM-private volume."""
from __future__ import annotations

from typing import TYPE_CHECKING

from . import disks, host_ops, names, ownership
from .errors import DriverError
from .one_input import VolatileArgs
from .placement import scheduler

if TYPE_CHECKING:
    from .action import Action

RAW = {"raw", ""}


def create(act: "Action", args: VolatileArgs) -> None:
    size_mb, fmt, dst, vm_id = args.size_mb, args.format, args.disk, args.vm_id
    if size_mb <= 0:
        raise DriverError(f"invalid disk size {size_mb} MB")
    fmt = fmt.strip().lower()
    fs = ""
    if fmt not in RAW | {"qcow2", "swap"}:
        fs, fmt = fmt, "raw"            # before 6.0 the second argument was the filesystem
    disk_id = dst.disk_id
    if disk_id is None:
        raise DriverError(f"{dst.path} is not a disk path (<vm dir>/disk.<n>)")
    vm = act.one.vm(vm_id)
    if fmt != "swap":
        fs = vm.disk(disk_id).get("FS") or fs
    if fs and fs.lower() not in host_ops.FILESYSTEMS:
        raise DriverError(f"unsupported filesystem '{fs}' (supported: {', '.join(sorted(host_ops.FILESYSTEMS))})")
    ds = act.datastore(dst.system_ds)
    api = ds.api
    res = names.vm_disk(vm_id, disk_id)
    host = act.hosts[dst.host]

    owner = disks.owner_of(vm, disk_id)
    existing = api.resource_definition(res)
    if existing and ownership.may_reuse(api, existing, owner, act.report):
        act.report.info(f"{res} already exists (retry); linking it")
        host_ops.link(host, ds.attacher.attach(dst.host, res), dst.path)
        return
    with ds.new_volume(res, owner, "mkimage") as new:
        scheduler(api, ds.settings.placement, act.report).create(res, size_mb * 1024, prefer_host=dst.host,
                                                                 props=new.props)
        device = ds.attacher.attach(dst.host, res)
        if fmt == "swap":
            host_ops.mkswap(host, device)
        elif fs:
            host_ops.mkfs(host, device, fs)
        elif fmt == "qcow2":
            host_ops.qcow2(host, device, size_mb)
        made_dir = host_ops.link(host, device, dst.path)
        new.undo.add(f"remove {dst.path}", lambda: host_ops.unlink(host, dst.path, remove_empty_dir=made_dir))
        # last: marks the disk complete (a retry after this point only relinks)
        new.complete(disks.owner_props(vm_id, dst.system_ds, disk_id))
