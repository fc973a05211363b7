"""Live migration hooks: premigrate, postmigrate, failmigrate (and migrate_other).

As the system datastore's TM we also move the VM directory (streamed through the front-end, so
hosts need no SSH keys for each other) and call the other TMs of the VM's disks. Called by another
system TM (the caller argument is set), we only handle our own disks and never touch the VM
directory, which belongs to that TM (BUG-16).
"""
from __future__ import annotations

import base64
import os
import subprocess

from . import disks, host_ops
from .errors import DriverError
from .one_api import VmDoc
from .one_input import migrate_input
from .remote import Shell, stream

TWO_PRIMARIES = "DrbdOptions/Net/allow-two-primaries"
DRIVER = "linstor_un"


def our_disks(vm: VmDoc) -> list:
    return [d for d in vm.disks() if d.get("TM_MAD") == DRIVER and d.get("TYPE").upper() != "CONTEXT"]


def settings_for(act, vm: VmDoc, system_ds: int):
    ds = act.one.datastore(system_ds)
    if ds.tm_mad == DRIVER:
        return act.settings(system_ds, ds.template(), ds.tm_mad)
    mine = our_disks(vm)
    if not mine:
        return None
    return act.settings(int(mine[0].get("DATASTORE_ID")))


def run_hook(act, action: str, argv: list[str]) -> None:
    args = migrate_input(argv)
    act.report.object_id = args.vm_id
    vm = VmDoc.parse(args.vm_xml) if args.vm_xml else act.one.vm(args.vm_id)
    if args.src_host == args.dst_host:
        act.report.info(f"not moving: {args.src_host} is both source and destination")
        return
    settings = settings_for(act, vm, args.system_ds)
    if settings is not None and our_disks(vm):
        api = act.linstor(settings)
        attacher = act.attacher(settings)
        for disk in our_disks(vm):
            res, _ = disks.resource_of(vm, disk.disk_id)
            path = os.path.join(args.vm_dir, f"disk.{disk.disk_id}")
            if action == "premigrate":
                device = attacher.attach(args.dst_host, res)
                api.set_props(res, {TWO_PRIMARIES: "yes"})
                host_ops.link(act.hosts[args.dst_host], device, path)
            else:
                leaving = args.src_host if action == "postmigrate" else args.dst_host
                rd = api.resource_definition(res)
                if rd is not None and TWO_PRIMARIES in rd.props:
                    api.set_props(res, {}, delete=[TWO_PRIMARIES])
                release(act, attacher, leaving, res, path)
    if args.caller:
        return
    if action == "premigrate":
        copy_vm_dir(act, args.src_host, args.dst_host, args.vm_dir)
    elif action == "postmigrate":
        remove_quietly(act, args.src_host, args.vm_dir)
    else:
        remove_quietly(act, args.dst_host, args.vm_dir)
    if action != "failmigrate":
        migrate_other(act, action, argv, vm, args)


def release(act, attacher, host_name, res, path) -> None:
    try:
        host = act.hosts[host_name]
        host_ops.unlink(host, path)
        attacher.detach(host_name, res, host_ops.linked_elsewhere(host, path))
    except DriverError as err:
        act.report.info(f"{res} not released on {host_name}: {err}")


def copy_vm_dir(act, src: str, dst: str, vm_dir: str) -> None:
    parent, name = os.path.dirname(vm_dir), os.path.basename(vm_dir)
    # the destination's own links (made above) are kept: only what the source has is added
    stream(act.hosts[src], ["tar", "-C", parent, "--sparse", "-cf", "-", name],
           act.hosts[dst], Shell.join(["mkdir", "-p", parent], "&&", ["tar", "-C", parent, "-xf", "-"]),
           f"copy {vm_dir}")


def remove_quietly(act, host: str, vm_dir: str) -> None:
    try:
        host_ops.remove_dir(act.hosts[host], vm_dir)
    except DriverError as err:
        act.report.info(f"{vm_dir} not removed on {host}: {err}")


def migrate_other(act, action: str, argv: list[str], vm: VmDoc, args) -> None:
    """OpenNebula's migrate_other: the same hook of every other TM used by the VM's disks."""
    others = sorted({d.get("TM_MAD") for d in vm.disks()} - {DRIVER, ""})
    base = [args.src_host, args.dst_host, args.vm_dir, str(args.vm_id), str(args.system_ds)]
    template = base64.b64encode(args.vm_xml.encode()).decode()
    for tm in others:
        script = act.remotes / "tm" / tm / action
        if not os.access(script, os.X_OK):
            continue
        act.report.info(f"Call {tm}/{action}")
        if act.version < (5, 10, 0):
            cmd, stdin = [str(script), *base, template, DRIVER], b""
        else:
            cmd, stdin = [str(script), *base, DRIVER], template.encode()
        subprocess.run(cmd, input=stdin, capture_output=True)   # like migrate_other: status ignored
