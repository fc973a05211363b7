"""VMM save/restore overrides: the VM's memory checkpoint on a LINSTOR volume instead of a file.

save: `one-vm-<id>-checkpoint`, placed with CHECKPOINT_REPLICA_COUNT (BUG-5), sized from the
domain's maximum memory plus room for device state, never from its RSS (BUG-31); `virsh save`
writes it on the host; any failure leaves the VM running and nothing created.
restore: attached on the (possibly new) host, the saved domain XML's datastore paths rewritten
when the system datastore changed (BUG-32), `virsh restore` with retries, then the volume is
deleted; failing to delete it after a good restore is only a warning.
When the system datastore is not linstor_un, both go to the host's stock kvm scripts (BUG-30).
"""
from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from . import disks, host_ops, names, ownership
from .context import OnDatastore
from .errors import DriverError
from .one_api import Xml
from .one_input import VmmArgs
from .ownership import Owner, Verdict
from .report import meaningful
from .placement import scheduler
from .remote import Shell


if TYPE_CHECKING:
    from .action import Action
    from .context import Datastore
    from .remote import Host

OVERHEAD_KIB = 128 * 1024


def remote_dir(act: "Action") -> str:
    """SCRIPTS_REMOTE_DIR as oned wrote it to <var>/config (default /var/tmp/one)."""
    base = os.environ.get("ONE_LOCATION")
    path = os.path.join(base, "var", "config") if base else "/var/lib/one/config"
    try:
        with open(path) as f:
            for line in f:
                m = re.match(r"^SCRIPTS_REMOTE_DIR=(\S+)", line.strip())
                if m:
                    return m.group(1)
    except OSError:
        pass
    return "/var/tmp/one"


def forward(act: "Action", host: str, script: str, argv: list[str], xml: str) -> bytes:
    """The stock kvm script on the host, with the action data as raw XML on stdin; what it printed
    (for oned: a snapshot's hypervisor id)."""
    path = f"{remote_dir(act)}/vmm/kvm/{script}"
    out = act.hosts[host].run([path, *argv], f"{script} on {host}", stdin=xml.encode(), check=False,
                                bulk=True)
    if out.rc != 0:
        raise DriverError(f"{script} on {host} failed (exit {out.rc}): "
                          f"{meaningful(out.stderr)}")
    return out.stdout


@dataclass
class Request(OnDatastore):
    domain: str
    checkpoint_path: str
    host_name: str
    vm_id: int
    ds: "Datastore"                 # the system datastore's: where the checkpoint volume goes
    host: "Host"
    owner: Owner

    @property
    def resource(self) -> str:
        return names.checkpoint(self.vm_id)


def request(act: "Action", script: str, args: VmmArgs) -> Optional[Request]:
    """Inputs of save/restore; None when the system datastore is not ours (forwarded instead)."""
    data = Xml.parse(args.xml)
    found = data.root.find("DATASTORE")
    if found is None:
        raise DriverError("the VMM driver action data has no DATASTORE")
    ds = Xml(found)
    if ds.text("TM_MAD") != disks.DRIVER:
        forward(act, args.host, script, list(args.argv), args.xml)
        return None
    owner = Owner.checkpoint(args.vm_id, data.text("VM/STIME"))
    return Request(args.domain, args.target, args.host, args.vm_id,
                   act.datastore(int(ds.text("ID")), ds.template("TEMPLATE"), ds.text("TM_MAD")),
                   act.hosts[args.host], owner)


def volume_kib(host: "Host", domain: str) -> int:
    """The size of a volume for the domain's save image: its maximum memory (never its RSS:
    BUG-31) and room for the device state."""
    size_kib = max_memory_kib(host, domain)
    return size_kib + max(OVERHEAD_KIB, size_kib // 10)


def max_memory_kib(host, domain: str) -> int:
    out = host_ops.virsh(host, ["dominfo", domain], f"read {domain}'s memory").stdout.decode()
    m = re.search(r"Max memory:\s+([0-9]+)\s*KiB", out)
    if not m:
        raise DriverError(f"cannot read the maximum memory of {domain}")
    return int(m.group(1))


def save(act: "Action", args: VmmArgs) -> None:
    r = request(act, "save", args)
    if r is None:
        return
    api, host, res, domain = r.api, r.host, r.resource, r.domain
    size_kib = volume_kib(host, domain)
    existing = api.resource_definition(res)
    if existing is not None:
        # an earlier save of this very VM that no restore consumed (or that failed): superseded
        if ownership.judge(existing.props, existing.size_kib, r.owner) is Verdict.FOREIGN:
            raise ownership.foreign(res, existing.props, r.owner)
        api.delete_definition(res)
    ds = r.ds
    with ds.new_volume(res, r.owner, "save") as new:
        new.undo.add(f"keep {domain} running", lambda: resume_if_paused(host, domain))
        scheduler(api, r.settings.checkpoint_placement, act.report).create(res, size_kib, prefer_host=r.host_name,
                                                                           props=new.props)
        device = ds.attacher.attach(r.host_name, res)
        host_ops.virsh(host, ["save", domain, device], f"save {domain} to {res}")
        new.keep()                    # the domain's memory is only there now: nothing may undo it
        try:
            new.complete()
        except DriverError as err:
            act.report.info(f"{res} holds the checkpoint, but its mark stays 'building': {err}")


def resume_if_paused(host: "Host", domain: str) -> None:
    state = host_ops.virsh(host, ["domstate", domain], "read the VM state", check=False)
    if state.rc == 0 and b"paused" in state.stdout:
        host_ops.virsh(host, ["resume", domain], f"resume {domain}")


def write_saved_xml(host: "Host", device: str, vm_id: int, system_ds: str, xml_path: str) -> None:
    """The domain XML inside a save image, its datastore paths in `system_ds` (the VM may have
    moved to another system datastore since: BUG-32), written to `xml_path` for `virsh restore`."""
    saved = host_ops.virsh(host, ["save-image-dumpxml", device], "read the saved domain XML").stdout.decode()
    fixed = re.sub(rf"(/datastores/+)[0-9]+(/+{vm_id}/)", rf"\g<1>{system_ds}\g<2>", saved)
    host.run(Shell.join(["mkdir", "-p", os.path.dirname(xml_path)], "&&", ["cat"], ">", [xml_path]),
             "write the domain XML for restore", stdin=fixed.encode())


def load(host: "Host", host_name: str, domain: str, device: str, xml_path: str) -> None:
    """The domain running again from the save image on `device`."""
    for attempt in range(3):     # the first restore of a fresh qemu sometimes fails
        done = host_ops.virsh(host, ["restore", device, "--xml", xml_path], f"restore {domain}", check=False)
        if done.rc == 0:
            break
        if attempt == 2:
            raise DriverError(f"restore {domain} on {host_name} failed: "
                              f"{meaningful(done.stderr)}")
        time.sleep(1)
    resume_if_paused(host, domain)


def restore(act: "Action", args: VmmArgs) -> None:
    r = request(act, "restore", args)
    if r is None:
        return
    api, host, res, domain, vm_id, host_name = r.api, r.host, r.resource, r.domain, r.vm_id, r.host_name
    rd = api.resource_definition(res)
    if rd is None:
        raise DriverError(f"no checkpoint volume {res} for VM {vm_id}")
    if not ownership.may_remove(rd.props, r.owner):
        raise DriverError(f"{res} is not a checkpoint of this VM ({r.owner.mark}) but of "
                          f"{rd.props[ownership.MADE_FOR]}: not restoring it")
    device = r.ds.attacher.attach(host_name, res)
    vm_dir = os.path.dirname(r.checkpoint_path.rstrip("/"))
    new_ds = os.path.basename(os.path.dirname(vm_dir))
    xml_path = os.path.join(vm_dir, "checkpoint.xml")
    write_saved_xml(host, device, vm_id, new_ds, xml_path)
    load(host, host_name, domain, device, xml_path)
    try:
        api.delete_definition(res, snapshots=[])    # never snapshotted (a stray one: listed on the retry)
    except DriverError as err:
        act.report.error(f"the VM runs again, but its checkpoint volume stays: {err}")
