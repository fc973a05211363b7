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
from typing import TYPE_CHECKING, Callable, Iterator, Optional

from . import disks, host_ops
from .errors import DriverError
from .one_api import VmDoc
from .one_input import MigrateArgs
from .validate import natural
from .remote import Shell, stream

if TYPE_CHECKING:
    from .action import Action
    from .attach import Attacher
    from .linstor_api import Linstor

TWO_PRIMARIES = "DrbdOptions/Net/allow-two-primaries"
DRIVER = disks.DRIVER


def settings_for(act: "Action", vm: VmDoc, system_ds: int):
    ds = act.one.datastore(system_ds)
    if ds.tm_mad == DRIVER:
        return act.settings(system_ds, ds.template(), ds.tm_mad)
    mine = disks.linstor_disks(vm)
    if not mine:
        return None
    return act.settings(int(mine[0].get("DATASTORE_ID")))


def run_hook(act: "Action", action: str, args: MigrateArgs) -> None:
    vm = VmDoc.parse(args.vm_xml) if args.vm_xml else act.one.vm(args.vm_id)
    old_dir, _ = previous_location(vm, args.vm_dir, args.system_ds)
    if args.src_host == args.dst_host and old_dir is None:
        act.report.info(f"not moving: {args.src_host} is both source and destination")
        return
    # OpenNebula 7.2+ moves a running VM to another system datastore only on its own host
    # (DS_LIVE_MIGRATE; "Cannot live migrate host and datastore at the same time")
    step = datastore_move if args.src_host == args.dst_host else hook
    if action != "premigrate":
        step(act, action, vm, args)
        return
    # oned calls no failmigrate when premigrate fails before 7.4 (one_vmm_exec.rb): a premigrate
    # that fails at any step (or is stopped: SIGTERM) undoes itself the way failmigrate would - no
    # second primary allowed, no attachment, link or directory left on the destination (7.4 calls
    # failmigrate as well: it finds nothing left to undo)
    try:
        step(act, "premigrate", vm, args)
    except BaseException:
        act.report.info("premigrate failed: undoing what it did on the destination")
        try:
            step(act, "failmigrate", vm, args)
        except Exception as err:            # (the failure that brought us here is the one to report)
            act.report.error(f"could not undo premigrate: {err}")
        raise


def each_disk(act: "Action", vm: VmDoc, settings) -> Iterator[tuple["Linstor", "Attacher", int, str, str]]:
    """(api, attacher, disk id, resource, link name) of each of the VM's linstor_un disks."""
    mine = disks.linstor_disks(vm)
    if settings is None or not mine:
        return
    ds = act.context(settings)
    api, attacher = ds.api, ds.attacher
    for disk in mine:
        res, _ = disks.resource_of(vm, disk.disk_id)
        yield api, attacher, disk.disk_id, res, f"disk.{disk.disk_id}"


def finish(act: "Action", action: str, vm: VmDoc, args: MigrateArgs, src_dir: str,
           copy: Callable[[], None]) -> None:
    """The VM directory (the system TM's alone: not when another TM called us) and the other TMs."""
    if args.caller:
        return
    if action == "premigrate":
        copy()
    elif action == "postmigrate":
        remove_quietly(act, args.src_host, src_dir)
    else:
        remove_quietly(act, args.dst_host, args.vm_dir)
    if action != "failmigrate":
        migrate_other(act, action, vm, args)


def hook(act: "Action", action: str, vm: VmDoc, args: MigrateArgs) -> None:
    """The VM moves to another host (and, before 7.2, maybe to another system datastore too)."""
    settings = settings_for(act, vm, args.system_ds)
    old_dir, old_ds = previous_location(vm, args.vm_dir, args.system_ds)
    src_dir = old_dir or args.vm_dir
    # the running domain names the paths of the datastore it started in, which a live datastore
    # move did not change: the destination's QEMU opens those, so they exist there while it moves
    named = domain_dirs(vm, args.vm_dir)
    for api, attacher, disk_id, res, name in each_disk(act, vm, settings):
        path = os.path.join(args.vm_dir, name)
        if action == "premigrate":
            device = attacher.attach(args.dst_host, res)
            props = {TWO_PRIMARIES: "yes"}
            if old_dir:
                rd = api.resource_definition(res)
                if rd is not None and disks.owned_by(rd.props, args.vm_id, disk_id):
                    props[disks.DS_ID] = str(args.system_ds)
            api.set_props(res, props)
            host_ops.link(act.hosts[args.dst_host], device, path)
            for other in named:
                host_ops.link(act.hosts[args.dst_host], device, os.path.join(other, name))
        else:
            leaving = args.src_host if action == "postmigrate" else args.dst_host
            rd = api.resource_definition(res)
            # a failed move back to the previous datastore: DS_ID returns there (one request)
            back = action == "failmigrate" and old_ds is not None and rd is not None and \
                disks.owned_by(rd.props, args.vm_id, disk_id)
            if rd is not None and (TWO_PRIMARIES in rd.props or back):
                api.set_props(res, {disks.DS_ID: str(old_ds)} if back else {},
                              delete=[TWO_PRIMARIES] if TWO_PRIMARIES in rd.props else [])
            for other in named:         # the old paths the destination had for the running domain
                quietly(act, args.dst_host, lambda h: host_ops.unlink(h, os.path.join(other, name),
                                                                       remove_empty_dir=True))
            release(act, attacher, leaving, res,
                    os.path.join(src_dir if action == "postmigrate" else args.vm_dir, name))
    finish(act, action, vm, args, src_dir,
           lambda: copy_vm_dir(act, args.src_host, src_dir, args.dst_host, args.vm_dir))


def datastore_move(act: "Action", action: str, vm: VmDoc, args: MigrateArgs) -> None:
    """The VM stays on its host and moves to another system datastore (7.2+). The device stays
    attached and in use all along: premigrate links it in the new directory and moves DS_ID,
    postmigrate removes the old directory, failmigrate takes the new one back."""
    host = act.hosts[args.src_host]
    old_dir, old_ds = previous_location(vm, args.vm_dir, args.system_ds)
    assert old_dir is not None and old_ds is not None      # (run_hook comes here only then)
    for api, attacher, disk_id, res, name in each_disk(act, vm, settings_for(act, vm, args.system_ds)):
        if action == "postmigrate":
            if args.caller:             # the directory is the system TM's: only our link goes
                quietly(act, args.src_host, lambda h: host_ops.unlink(h, os.path.join(old_dir, name)))
            continue
        rd = api.resource_definition(res)
        owned = rd is not None and disks.owned_by(rd.props, args.vm_id, disk_id)
        if action == "premigrate":
            device = attacher.attach(args.src_host, res)      # there already: the VM runs on it
            if owned:
                api.set_props(res, {disks.DS_ID: str(args.system_ds)})
            host_ops.link(host, device, os.path.join(args.vm_dir, name))
        else:
            if owned and rd is not None and rd.props.get(disks.DS_ID) != str(old_ds):
                api.set_props(res, {disks.DS_ID: str(old_ds)})
            quietly(act, args.src_host, lambda h: host_ops.unlink(h, os.path.join(args.vm_dir, name),
                                                                   remove_empty_dir=True))
    # (source and destination are one host: the same directory steps as a host change)
    finish(act, action, vm, args, old_dir, lambda: host_ops.copy_dir_here(host, old_dir, args.vm_dir))


def domain_dirs(vm: VmDoc, vm_dir: str) -> list[str]:
    """VM directories of other datastores whose paths the running domain may name."""
    datastores = os.path.dirname(os.path.dirname(vm_dir.rstrip("/")))
    here = os.path.basename(vm_dir.rstrip("/"))
    current = os.path.normpath(vm_dir)
    dirs = [os.path.join(datastores, str(ds), here) for ds in vm.domain_datastores()]
    return [d for d in dirs if os.path.normpath(d) != current]


def release(act: "Action", attacher, host_name, res, path) -> None:
    try:
        host = act.hosts[host_name]
        host_ops.unlink(host, path)
        attacher.detach(host_name, res, host_ops.linked_elsewhere(host, path))
    except DriverError as err:
        act.report.info(f"{res} not released on {host_name}: {err}")


def previous_location(vm: VmDoc, vm_dir: str, system_ds: int) -> tuple[Optional[str], Optional[int]]:
    """The VM directory and id of the previous system datastore, when the migration changes it."""
    previous = natural(vm.text("HISTORY_RECORDS/HISTORY[last()-1]/DS_ID"))
    if previous in (None, system_ds):
        return None, None
    datastores = os.path.dirname(os.path.dirname(vm_dir.rstrip("/")))
    return os.path.join(datastores, str(previous), os.path.basename(vm_dir.rstrip("/"))), previous


def copy_vm_dir(act: "Action", src: str, src_dir: str, dst: str, vm_dir: str) -> None:
    # the destination's own links (made above) are kept: only what the source has is added
    stream(act.hosts[src], ["tar", "-C", src_dir, "--sparse", "-cf", "-", "."],
           act.hosts[dst], Shell.join(["mkdir", "-p", vm_dir], "&&", ["tar", "-C", vm_dir, "-xf", "-"]),
           f"copy {src_dir}")


def quietly(act: "Action", host: str, step) -> None:
    try:
        step(act.hosts[host])
    except DriverError as err:
        act.report.info(f"on {host}: {err}")


def remove_quietly(act: "Action", host: str, vm_dir: str) -> None:
    try:
        host_ops.remove_dir(act.hosts[host], vm_dir)
    except DriverError as err:
        act.report.info(f"{vm_dir} not removed on {host}: {err}")


def migrate_other(act: "Action", action: str, vm: VmDoc, args: MigrateArgs) -> None:
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
