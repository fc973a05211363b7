"""VM snapshots (onevm snapshot-create, -revert, -delete) of VMs whose disks are linstor_un volumes.

OpenNebula's KVM driver makes libvirt internal snapshots, which exist only inside qcow2 files. The
VMM overrides (-l snapshot_create=snapshot_create_linstor_un,...) take them from LINSTOR instead:

- create: the guest paused; its memory and device state written by libvirt into a volume of its
  own (`one-vm-<vm>-vmsnap-<id>`, placed like checkpoints: an external memory snapshot with no disk
  in it, the same save image `virsh save` writes); every linstor_un disk snapshotted in one LINSTOR
  request (`linstor_un-vmsnap-<vm>-<id>`: the hypervisor id oned keeps); the guest resumed. The
  pause is logged.
- revert: the disks' current state kept (`linstor_un-vmrevert-<vm>`), the domain stopped, each disk
  rolled back (or restored and copied where LINSTOR cannot roll back: snapshots.revert_to), the
  memory loaded (`virsh restore`), the domain running. A failure after the domain stopped puts
  every disk back as it was and boots the domain from them (its memory before the revert, which
  the revert was to discard, is not kept).
- delete: the disks' snapshots and the memory volume go.

Never `snapshot-<id>` (disk snapshots) nor a backup's name: disk-snapshot monitoring, snap_* and
backups leave these alone. Each snapshot carries its VM disk's token, the memory volume its mark.
oned drops a VM's snapshots by itself on poweroff, stop and migration when its VM_MAD has no
KEEP_SNAPSHOTS: every action here removes this VM's snapshots oned no longer lists, and TM delete
(terminate, detach) and mvds remove those of what they act on (`forget_disk`, `forget_memory`).
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass
from contextlib import contextmanager
from typing import TYPE_CHECKING, AbstractSet, Callable, Iterator, Optional

from . import backup_chain, checkpoint, disks, host_ops, names, ownership, snapshots
from .context import OnDatastore
from .disks import VmVolume
from .errors import DriverError
from .one_api import VmDoc, Xml
from .one_input import VmmArgs
from .validate import natural
from .ownership import Owner, Verdict
from .placement import scheduler
from .rollback import Rollback


if TYPE_CHECKING:
    from .action import Action
    from .context import Datastore
    from .linstor_api import Linstor, ResourceDef, Snapshot
    from .remote import Host

DRIVER = disks.DRIVER
VM_OF = "Aux/one/linstor_un/VM_SNAPSHOT_OF"     # on a memory volume: the VM id (found by it)
DISKS_TAKEN = "Aux/one/linstor_un/VM_SNAPSHOT_DISKS"   # "<disk id>:<resource> ...": what the snapshot holds
ACTIONS = {"snapshot_create": "CREATE", "snapshot_revert": "REVERT", "snapshot_delete": "DELETE"}


@dataclass
class Request(OnDatastore):
    """What oned asks of a VM snapshot action, read once."""
    domain: str
    host_name: str
    vm: VmDoc
    system_ds: int
    vm_dir: str
    snap_id: int                    # SNAPSHOT_ID of the snapshot oned marked ACTIVE
    listed: set[int]                # every SNAPSHOT_ID oned keeps for the VM
    volumes: list[VmVolume]         # the writable linstor_un disks
    ds: "Datastore"                 # the system datastore's: where the memory volume goes
    host: "Host"

    @property
    def name(self) -> str:
        return names.vm_snapshot(self.vm.id, self.snap_id)

    @property
    def memory(self) -> str:
        return names.vm_snapshot_memory(self.vm.id, self.snap_id)

    @property
    def owner(self) -> Owner:
        return Owner.vm_snapshot(self.vm.id, self.vm.text("STIME"), self.snap_id)

    def taken(self) -> str:
        return " ".join(f"{v.disk_id}:{v.resource}" for v in self.volumes)


def request(act: "Action", args: VmmArgs, script: str) -> Optional[Request]:
    """What oned sends (one_input.VmmArgs.snapshot: 5.12-7.4); None when the VM has no linstor_un
    disk to snapshot, or the snapshot is one the stock script made: the stock script did the work."""
    data = Xml.parse(args.xml)
    vm_el, ds_el = data.root.find("VM"), data.root.find("DATASTORE")
    if vm_el is None or ds_el is None:
        raise DriverError("the VMM driver action data has no VM or no DATASTORE")
    vm, ds, vm_id = VmDoc(vm_el), Xml(ds_el), args.vm_id
    if vm.id != vm_id:
        raise DriverError(f"the action data is VM {vm.id}'s, not VM {vm_id}'s: nothing was changed")
    active = vm.root.find("TEMPLATE/SNAPSHOT[ACTIVE='YES']")
    snap_id = natural((active.findtext("SNAPSHOT_ID") or "").strip()) if active is not None else None
    if active is None or snap_id is None:
        raise DriverError(f"oned marked no snapshot of VM {vm_id} ACTIVE: nothing was changed")
    action = (active.findtext("ACTION") or "").strip()
    if action and action != ACTIONS[script]:
        raise DriverError(f"oned's active snapshot {snap_id} of VM {vm_id} is marked for {action}, not "
                          f"{ACTIONS[script]}: nothing was changed")
    mine = [d for d in disks.linstor_disks(vm) if not disks.read_only(d)]
    if not ours(script, args.target, vm_id) or not mine and script == "snapshot_create":
        # a VM without linstor_un disks, or a snapshot the stock script made (before linstor_un)
        printed = checkpoint.forward(act, args.host, script, list(args.argv), args.xml)
        if script == "snapshot_create":
            print(printed.decode(errors="replace").strip())
        return None
    others = [d for d in vm.disks() if d.get("TM_MAD") != DRIVER and d.get("TYPE").upper() != "CONTEXT"
              and not disks.read_only(d)]
    if others and script != "snapshot_delete":
        listed = ", ".join(f"disk {d.disk_id} ({d.get('TM_MAD') or 'no TM_MAD'})" for d in others)
        raise DriverError(f"VM {vm_id} has writable disks linstor_un does not hold ({listed}): a VM snapshot "
                          f"cannot take them at the same instant as its linstor_un disks. Nothing was changed")
    if ds.text("TM_MAD") != DRIVER:
        raise DriverError(f"VM {vm_id} runs in system datastore {ds.text('ID')} (TM_MAD {ds.text('TM_MAD')}): "
                          f"VM snapshots of linstor_un disks need a linstor_un system datastore, which "
                          f"holds their memory. Nothing was changed")
    system_ds = int(ds.text("ID"))
    listed_ids = {natural((s.findtext("SNAPSHOT_ID") or "").strip()) for s in vm.root.findall("TEMPLATE/SNAPSHOT")}
    base = ds.text("BASE_PATH").rstrip("/") or f"/var/lib/one/datastores/{system_ds}"
    return Request(args.domain, args.host, vm, system_ds, f"{base}/{vm_id}", snap_id,
                   {i for i in listed_ids if i is not None},
                   disks.volumes(act, vm, [d.disk_id for d in mine], system_ds),
                   act.datastore(system_ds, ds.template("TEMPLATE"), DRIVER), act.hosts[args.host])


def ours(script: str, ident: str, vm_id: int) -> bool:
    """Whether a hypervisor id (revert, delete) names a snapshot this driver took for this VM."""
    if script == "snapshot_create":
        return True
    parsed = names.vm_snapshot_of(ident)
    if parsed is None:
        return False
    if parsed[0] != vm_id:
        raise DriverError(f"snapshot {ident} is not VM {vm_id}'s: nothing was changed")
    return True


def hypervisor_id(r: Request, args: VmmArgs, script: str) -> None:
    """The snapshot named in argv (create: its id; revert, delete: its hypervisor id) is the one
    oned marked ACTIVE."""
    expected = str(r.snap_id) if script == "snapshot_create" else r.name
    if args.target != expected:
        raise DriverError(f"argv names snapshot {args.target}, oned's active snapshot of VM {r.vm.id} is "
                          f"{expected}: nothing was changed")


def begin(act: "Action", args: VmmArgs, script: str) -> Optional[tuple[Request, dict[str, list["Snapshot"]]]]:
    """The request, checked against oned's active snapshot, and each disk's snapshots (read once);
    None when the stock script did the work."""
    r = request(act, args, script)
    if r is None:
        return None
    hypervisor_id(r, args, script)
    return r, snapshots.listings(r.volumes)


# ---- create ------------------------------------------------------------------------------------

def create(act: "Action", args: VmmArgs) -> None:
    begun = begin(act, args, "snapshot_create")
    if begun is None:
        return
    r, listings = begun
    forget_unlisted(act, r, listings)
    memory = r.api.resource_definition(r.memory)
    if not leftovers_of(act, r, listings, memory):
        # a run killed while the guest was paused left it paused: this run resumes it
        take(act, r, resume_paused=memory is not None)
    print(r.name)


def leftovers_of(act: "Action", r: Request, listings: dict[str, list["Snapshot"]],
                 rd: Optional["ResourceDef"]) -> bool:
    """True when a run before this one took the whole snapshot (a retry: nothing to do). What a
    run cut short left is removed; a name taken by anything else stops the action (`rd`: the
    memory volume's definition, if there is one)."""
    verdict = None if rd is None else ownership.judge(rd.props, rd.size_kib, r.owner)
    if verdict is Verdict.FOREIGN:
        raise ownership.foreign(r.memory, rd.props if rd else {}, r.owner)
    found = {}
    for v in r.volumes:
        snap = next((s for s in listings[v.resource] if s.name == r.name), None)
        if snap is not None:
            snapshots.belongs(snap, v.resource, v.owner)
            if not ownership.made_by_linstor_un(snap):
                raise DriverError(f"snapshot {r.name} of {v.resource} exists and was not taken by linstor_un: "
                                  f"nothing was changed. Delete it if nobody needs it (linstor snapshot delete "
                                  f"{v.resource} {r.name}) and retry")
        found[v.resource] = snap
    if verdict is Verdict.MINE and rd is not None and rd.props.get(DISKS_TAKEN) == r.taken() \
            and all(found.values()):
        act.report.info(f"snapshot {r.snap_id} of VM {r.vm.id} was taken by an earlier run")
        return True
    for v in r.volumes:
        if found[v.resource] is not None:
            v.api.delete_snapshot(v.resource, r.name)
    if rd is not None:
        act.report.info(f"{r.memory}: {verdict.value if verdict else ''}; replacing it")
        r.api.delete_definition(r.memory)
    return False


def take(act: "Action", r: Request, resume_paused: bool = False) -> None:
    api, host, domain = r.api, r.host, r.domain
    size_kib = checkpoint.volume_kib(host, domain)
    targets = disk_targets(host, domain)
    ds = r.ds
    with ds.new_volume(r.memory, r.owner, "snapshot_create", extra={VM_OF: str(r.vm.id), DISKS_TAKEN: r.taken()}) as new:
        scheduler(api, r.settings.checkpoint_placement, act.report).create(r.memory, size_kib,
                                                                           prefer_host=r.host_name, props=new.props)
        new.undo.add(f"delete snapshots {r.name}", lambda: drop(r.volumes, r.name))
        new.undo.add(f"clear the marks of {r.name}", lambda: unmark(r.volumes, r.name))
        mark(r.volumes, r.name)
        with ds.attacher.borrowed(r.host_name, r.memory) as device, paused(act, r, resume_paused):
            # one image of memory and device state, and one LINSTOR request per controller for the disks
            host_ops.virsh(host, ["snapshot-create-as", domain, "--name", r.name, "--no-metadata",
                                  "--memspec", f"file={device},snapshot=external",
                                  *[a for t in targets for a in ("--diskspec", f"{t},snapshot=no")]],
                           f"save the memory of {domain}")
            snapshots.together(r.volumes, r.name)
        unmark(r.volumes, r.name)
        new.complete()


@contextmanager
def paused(act: "Action", r: Request, resume_paused: bool = False) -> Iterator[None]:
    """The domain paused for the body and resumed after it, also when it fails; one paused already
    stays paused, unless `resume_paused` (a run of this action paused it and was killed). How long
    it was paused goes to the log."""
    state = host_ops.virsh(r.host, ["domstate", r.domain], f"read the state of {r.domain}").stdout
    if resume_paused and b"paused" in state:
        # running first: QEMU writes no memory image of a guest a finished one left paused
        host_ops.virsh(r.host, ["resume", r.domain], f"resume {r.domain}")
        state = b"running"
    started = time.monotonic()
    resume = b"running" in state
    if resume:
        host_ops.virsh(r.host, ["suspend", r.domain], f"pause {r.domain}")
    try:
        yield
    finally:
        if resume:
            host_ops.virsh(r.host, ["resume", r.domain], f"resume {r.domain}")
            act.report.info(f"VM {r.vm.id} was paused {time.monotonic() - started:.2f} s for snapshot "
                            f"{r.snap_id} ({len(r.volumes)} disk(s) and its memory)")


def disk_targets(host: "Host", domain: str) -> list[str]:
    """The target of every disk of the domain (libvirt's external memory snapshot must be told to
    leave each one out)."""
    out = host_ops.virsh(host, ["domblklist", domain, "--details"], f"list the disks of {domain}").stdout.decode()
    targets = []
    for line in out.splitlines()[2:]:
        parts = line.split()
        if len(parts) >= 3 and parts[1] in ("disk", "cdrom", "floppy", "lun"):
            targets.append(parts[2])
    return targets


def mark(volumes: list[VmVolume], snap: str) -> None:
    """Each disk's ownership token for `snap`, on its definition: LINSTOR copies it into the snapshot."""
    for v in volumes:
        v.api.set_props(v.resource, {ownership.SNAPSHOT_TOKEN + snap: v.owner.snapshot_token(snap)})


def unmark(volumes: list[VmVolume], snap: str) -> None:
    for v in volumes:
        v.api.set_props(v.resource, {}, delete=[ownership.SNAPSHOT_TOKEN + snap])


def drop(volumes: list[VmVolume], snap: str) -> None:
    listed = snapshots.listings(volumes)
    for v in volumes:
        if any(s.name == snap for s in listed[v.resource]):
            v.api.delete_snapshot(v.resource, snap)


# ---- revert ------------------------------------------------------------------------------------

def revert(act: "Action", args: VmmArgs) -> None:
    begun = begin(act, args, "snapshot_revert")
    if begun is None:
        return
    r, listings = begun
    rd = r.api.resource_definition(r.memory)
    if rd is None or not ownership.may_remove(rd.props, r.owner) or ownership.BUILDING in rd.props \
            or ownership.MADE_FOR not in rd.props:
        why = "does not exist" if rd is None else "is not complete" if ownership.BUILDING in rd.props else \
            f"was made for {rd.props.get(ownership.MADE_FOR, 'something else')}"
        raise DriverError(f"the memory volume {r.memory} of snapshot {r.snap_id} {why}: VM {r.vm.id} cannot be "
                          f"reverted to it. Nothing was changed")
    if rd.props.get(DISKS_TAKEN) != r.taken():
        raise DriverError(f"snapshot {r.snap_id} holds disks {describe_disks(rd.props.get(DISKS_TAKEN, ''))}; "
                          f"VM {r.vm.id} has {describe_disks(r.taken())} now (a disk attached or detached "
                          f"since): reverting would leave them at different instants. Nothing was changed")
    for v in r.volumes:
        snap = next((s for s in listings[v.resource] if s.name == r.name), None)
        if snap is None or not ownership.snapshot_is_mine(snap, v.owner):
            raise DriverError(f"disk {v.disk_id} ({v.resource}) has no snapshot {r.name} taken for it: VM "
                              f"{r.vm.id} cannot be reverted. Nothing was changed")
    forget_unlisted(act, r, listings)
    attacher = r.ds.attacher
    safety = names.vm_revert_safety(r.vm.id)
    xml_path, running_xml = f"{r.vm_dir}/{r.name}.xml", f"{r.vm_dir}/{safety}.xml"
    with attacher.borrowed(r.host_name, r.memory) as device:
        checkpoint.write_saved_xml(r.host, device, r.vm.id, str(r.system_ds), xml_path)
        running = domain_exists(r)
        if running:
            dumped = host_ops.virsh(r.host, ["dumpxml", "--migratable", r.domain], f"read {r.domain}'s XML")
            host_ops.write_file(r.host, running_xml, dumped.stdout)
        keep_state(act, r, safety, listings)
        with Rollback(act.report) as undo:
            undo.add(f"delete snapshots {safety}", lambda: drop(r.volumes, safety))
            if running:
                undo.add(f"boot {r.domain} again from its disks (its memory before the revert is lost)",
                         lambda: host_ops.virsh(r.host, ["create", running_xml], f"start {r.domain}"))
                host_ops.virsh(r.host, ["destroy", r.domain], f"stop {r.domain}")
            undo.add("put every disk back as it was before the revert", lambda: back_to(r, safety))
            for v in r.volumes:
                snapshots.revert_to(v.ds, lambda: r.host, v.resource, r.name,
                                    snaps=listings[v.resource], owner=v.owner)
            checkpoint.load(r.host, r.host_name, r.domain, device, xml_path)
            undo.commit()
    for v in r.volumes:
        v.api.delete_snapshot(v.resource, safety)
    r.host.run(["rm", "-f", xml_path, running_xml], "remove the domain XML files", check=False)


def describe_disks(taken: str) -> str:
    ids = [item.split(":", 1)[0] for item in taken.split()]
    return ", ".join(ids) if ids else "none"


def domain_exists(r: Request) -> bool:
    """Whether the domain runs on the host: a revert cut short may have stopped it already, or be
    stopping it still (libvirt: "in shutdown" for a moment)."""
    deadline = time.monotonic() + 30
    while True:
        out = host_ops.virsh(r.host, ["domstate", r.domain], f"read the state of {r.domain}", check=False)
        if out.rc != 0:
            return False
        if b"in shutdown" not in out.stdout or time.monotonic() > deadline:
            return b"running" in out.stdout or b"paused" in out.stdout
        time.sleep(0.5)


def keep_state(act: "Action", r: Request, safety: str, listings: dict[str, list["Snapshot"]]) -> None:
    """Every disk's state now, as `safety`, in one instant: what a failed revert goes back to. One a
    revert cut short left (of this very VM disk) is replaced: the retry reverts anyway."""
    for v in r.volumes:
        left = next((s for s in listings[v.resource] if s.name == safety), None)
        if left is not None:
            snapshots.belongs(left, v.resource, v.owner)
            v.api.delete_snapshot(v.resource, safety)
    mark(r.volumes, safety)
    try:
        snapshots.together(r.volumes, safety)
    except BaseException:
        drop(r.volumes, safety)
        raise
    finally:
        unmark(r.volumes, safety)
    listings.update(snapshots.listings(r.volumes))     # read again: the safety snapshot is the newest now


def back_to(r: Request, safety: str) -> None:
    """Every disk rolled back to the state kept before the revert (the newest snapshot of each:
    LINSTOR rolls back to it at every release)."""
    failed = []
    for v in r.volumes:
        refused = v.api.rollback(v.resource, safety)
        if refused:
            failed.append(f"{v.resource}: {refused}")
    if failed:
        raise DriverError(f"kept as snapshot {safety}: {'; '.join(failed)}")


# ---- delete ------------------------------------------------------------------------------------

def delete(act: "Action", args: VmmArgs) -> None:
    begun = begin(act, args, "snapshot_delete")
    if begun is None:
        return
    r, listings = begun
    for v in r.volumes:
        snap = next((s for s in listings[v.resource] if s.name == r.name), None)
        if snap is not None:
            snapshots.belongs(snap, v.resource, v.owner)
            v.api.delete_snapshot(v.resource, r.name)
            listings[v.resource].remove(snap)
    rd = r.api.resource_definition(r.memory)
    if rd is not None:
        if not ownership.may_remove(rd.props, r.owner):
            raise DriverError(f"{r.memory} was made for {rd.props[ownership.MADE_FOR]}, not for "
                              f"{r.owner.describe()} ({r.owner.mark}): not deleting it")
        r.api.delete_definition(r.memory)
    forget_unlisted(act, r, listings, also={r.snap_id})


# ---- what oned no longer lists -----------------------------------------------------------------

def forget_unlisted(act: "Action", r: Request, listings: dict[str, list["Snapshot"]],
                    also: AbstractSet[int] = frozenset()) -> None:
    """This VM's snapshots oned dropped on its own (no KEEP_SNAPSHOTS) go: disks' and memory
    (`listings`: each disk's snapshots, as just read)."""
    keep = r.listed - set(also)
    for v in r.volumes:
        forget_disk(v.api, v.resource, r.vm.id, v.owner, keep=keep, snaps=listings[v.resource])
    forget_memory(r.api, r.vm.id, lambda: r.vm.text("STIME"), keep=keep)


def forget_all(act: "Action", vm: VmDoc, system_ds: int) -> None:
    """Every VM snapshot of the VM goes (oned drops them all when a backup is restored into it:
    LifeCycleManager::trigger_disk_restore_success)."""
    mine = [d.disk_id for d in disks.linstor_disks(vm) if not disks.read_only(d)]
    for v in disks.volumes(act, vm, mine, system_ds):
        forget_disk(v.api, v.resource, vm.id, v.owner)
    ds = act.one.datastore(system_ds)
    if ds.tm_mad == DRIVER:
        forget_memory(act.datastore(system_ds).api, vm.id, lambda: vm.text("STIME"))


def disk_leaves_vm(api: "Linstor", res: str, vm_id: int, owner: Owner) -> None:
    """A disk leaves its VM (detach, terminate, mvds): the VM's backup chain and VM snapshots on
    it go, from one listing of its snapshots."""
    snaps = api.snapshots(res)
    backup_chain.forget(api, res, vm_id, owner, snaps)
    forget_disk(api, res, vm_id, owner, snaps=snaps)


def forget_disk(api: "Linstor", res: str, vm_id: int, owner: Owner, keep: AbstractSet[int] = frozenset(),
                snaps: Optional[list["Snapshot"]] = None) -> None:
    """This VM disk's VM snapshots (except `keep`) go: the disk leaves the VM (detach, terminate,
    mvds) or oned no longer lists them."""
    for snap in api.snapshots(res) if snaps is None else snaps:
        parsed = names.vm_snapshot_of(snap.name)
        if snap.name == names.vm_revert_safety(vm_id) and ownership.snapshot_is_mine(snap, owner):
            api.delete_snapshot(res, snap.name)
        elif parsed is not None and parsed[0] == vm_id and parsed[1] not in keep \
                and ownership.snapshot_is_mine(snap, owner):
            api.delete_snapshot(res, snap.name)


def memory_volumes(api: "Linstor", vm_id: int, stime: Callable[[], str]) -> Iterator[tuple[int, str]]:
    """(snapshot id, resource) of each memory volume made for this very VM (`stime`: its STIME,
    asked only when there is a volume to judge)."""
    for rd in api.resource_definitions(props=[f"{VM_OF}={vm_id}"], sizes=False):
        m = re.fullmatch(r"one-vm-([0-9]+)-vmsnap-([0-9]+)", rd.name)
        if m and int(m.group(1)) == vm_id and \
                rd.props.get(ownership.MADE_FOR) == Owner.vm_snapshot(vm_id, stime(), int(m.group(2))).mark:
            yield int(m.group(2)), rd.name


def forget_memory(api: "Linstor", vm_id: int, stime: Callable[[], str], keep: AbstractSet[int] = frozenset()) -> None:
    """This VM's memory volumes (except `keep`'s) go."""
    for snap_id, res in list(memory_volumes(api, vm_id, stime)):
        if snap_id not in keep:
            api.delete_definition(res)
