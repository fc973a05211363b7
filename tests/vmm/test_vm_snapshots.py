"""VM snapshots (snapshot_create/revert/delete_linstor_un) on real libvirt + QEMU domains in the lab.

The guest is a boot sector (GUEST below) that waits for a key (BIOS int 16h), keeps it in memory
at 0x7e04 and writes a sector of it to its disk (int 13h, sector 1): what the guest remembers and
what it wrote are both visible from outside (the QEMU monitor, the device), so a revert can be
checked on both.
"""
from __future__ import annotations

import os
import re
import time

import pytest

from lab.backup_ds import BackupDatastore
from lab.lab import FRONTEND, IMAGE_DS, SYSTEM_DS, Lab, LabConfig
from lab.oned import VM, Datastore, Disk, History, to_xml
from lab.runner import vmm_action_data

from tests.reliability.test_killed import when_request
from tests.tm.conftest import Env, disk_path

# as --32 of:  xor %ax,%ax; mov %ax,%ds; mov %ax,%es; mov %ax,%ss; mov $0x7c00,%sp; sti
#   mov %dl,0x7e08; movl $0x3a59454b,0x7e00                      ("KEY:" and the boot drive)
# again: mov $0,%ah; int $0x16; mov %al,0x7e04                    (a key, kept in memory)
#   mov $0x8000,%di; mov $512,%cx; cld; rep stosb                 (a sector of it)
#   mov $0x0301,%ax; mov $2,%cx; mov $0,%dh; mov 0x7e08,%dl; mov $0x8000,%bx; int $0x13; jmp again
GUEST = bytes.fromhex("31c08ed88ec08ed0bc007cfb8816087e66c706007e4b45593ab400cd16a2047ebf0080b90002fcf3aab801"
                      "03b90200b6008a16087ebb0080cd13ebdd")
BOOT = GUEST + bytes(510 - len(GUEST)) + b"\x55\xaa"

DOMAIN = """<domain type='qemu'><name>one-{vm}</name><memory unit='MiB'>32</memory><vcpu>1</vcpu>
<os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
<devices>{disks}<graphics type='vnc' autoport='yes' listen='127.0.0.1'/></devices></domain>"""
DISK = """<disk type='block' device='disk'><driver name='qemu' type='raw' cache='none'/>
<source dev='{path}'/><target dev='vd{letter}' bus='virtio'/></disk>"""


@pytest.fixture(scope="module")
def venv():
    with Lab(LabConfig(hosts=2, libvirt=True)) as lab:
        env = Env(lab)
        env.bds = BackupDatastore(lab)
        yield env


def virsh(env, host, command: str, check: bool = True) -> str:
    out = env.lab.host(host).run_inside(f"virsh -c qemu:///system {command}", check=check)
    return out.stdout.decode()


def state(env, host, vm_id) -> str:
    out = env.lab.host(host).run_inside(f"virsh -c qemu:///system domstate one-{vm_id}", check=False)
    return out.stdout.decode().strip() if out.returncode == 0 else "absent"


def boot(env, vm_id, host, ndisks):
    h = env.lab.host(host)
    disks = "".join(DISK.format(path=disk_path(vm_id, i), letter="abcd"[i]) for i in range(ndisks))
    f = h.path("/var/lib/one/datastores") / f"dom-{vm_id}.xml"
    f.write_text(DOMAIN.format(vm=vm_id, disks=disks))
    h.run_inside(f"virsh -c qemu:///system create /var/lib/one/datastores/dom-{vm_id}.xml")


def remembered(env, host, vm_id) -> int:
    """The guest's last key, read from its memory through the QEMU monitor (0 before any key)."""
    out = virsh(env, host, f"qemu-monitor-command one-{vm_id} --hmp 'xp /1xb 0x7e04'")
    return int(re.search(r":\s*0x([0-9a-f]+)", out).group(1), 16)


def started(env, host, vm_id) -> bool:
    """The guest's code runs (its marker "KEY:" is in memory): keys sent before are lost in the BIOS."""
    out = virsh(env, host, f"qemu-monitor-command one-{vm_id} --hmp 'xp /1xw 0x7e00'")
    return "0x3a59454b" in out


def press(env, host, vm_id, key: str) -> None:
    """A key to the guest; returns once the guest has it in memory and has written its sector."""
    deadline = time.monotonic() + 120
    while not started(env, host, vm_id):
        assert time.monotonic() < deadline, f"the guest of VM {vm_id} did not start"
        time.sleep(0.5)
    virsh(env, host, f"send-key one-{vm_id} KEY_{key.upper()}")
    while time.monotonic() < deadline:
        if remembered(env, host, vm_id) == ord(key) and sector(env, host, vm_id) == key.encode() * 512:
            return
        time.sleep(0.3)
    raise AssertionError(f"the guest did not take key {key}: memory {remembered(env, host, vm_id):#x}, "
                         f"sector {sector(env, host, vm_id)[:8]!r}")


def sector(env, host, vm_id) -> bytes:
    return env.lab.host(host).run_inside(
        f"dd if={disk_path(vm_id, 0)} bs=512 skip=1 count=1 iflag=direct status=none").stdout


def running_vm(env, vm_id, host="node1", ndisks=2, data=b"") -> VM:
    """A RUNNING VM whose disk 0 boots the guest (which took key 'a') and disk 1 holds `data`."""
    vm = env.vm(vm_id, [Disk(i, SYSTEM_DS, size=16) for i in range(ndisks)], host=host, lcm="RUNNING")
    for i in range(ndisks):
        assert env.r.tm("mkimage", 16, "raw", f"{host}:{disk_path(vm_id, i)}", vm_id, SYSTEM_DS).ok
    env.lab.write_device(host, disk_path(vm_id, 0), BOOT)
    if ndisks > 1 and data:
        env.lab.write_device(host, disk_path(vm_id, 1), data)
    boot(env, vm_id, host, ndisks)
    assert state(env, host, vm_id) == "running"
    press(env, host, vm_id, "a")
    return env.lab.oned.vms[vm_id]


def data(env, vm, host, ds=SYSTEM_DS):
    env.lab.oned.add(vm)
    return vmm_action_data(to_xml(vm.element()), to_xml(env.lab.oned.datastores[ds].element()), host,
                           f"one-{vm.id}", "")


def create(env, vm, host="node1", **kw):
    snap = vm.new_snapshot()
    result = env.r.vm_snapshot("create", f"one-{vm.id}", str(snap["SNAPSHOT_ID"]), vm.id, host, data(env, vm, host),
                               **kw)
    if result.ok:
        snap["HYPERVISOR_ID"] = result.stdout.split()[0]     # as VirtualMachineManager::_snapshotcreate reads it
    else:
        vm.snapshots.remove(snap)                           # oned drops a snapshot that failed
    return result, snap


def act(env, vm, action, snap, host="node1", **kw):
    vm.activate_snapshot(int(snap["SNAPSHOT_ID"]), action.upper())
    result = env.r.vm_snapshot(action, f"one-{vm.id}", snap["HYPERVISOR_ID"], vm.id, host, data(env, vm, host), **kw)
    if action == "delete" and result.ok:
        vm.snapshots.remove(snap)
    return result


def linstor_snapshots(env) -> dict:
    """resource -> names of its snapshots."""
    with env.lab.client() as c:
        out: dict = {}
        for s in c.snapshot_dfn_list_raise().snapshots:
            out.setdefault(s.resource_name, set()).add(s.name)
        return out


def destroy(env, host, vm_id):
    env.lab.host(host).run_inside(f"virsh -c qemu:///system destroy one-{vm_id}", check=False)


def test_revert_gives_back_every_disk_and_the_memory(venv):
    env = venv
    first = bytes(range(256)) * 16
    vm = running_vm(env, 1, data=first)
    result, snap = create(env, vm)
    assert result.ok, str(result)
    assert result.stdout.strip() == "linstor_un-vmsnap-1-0"
    assert state(env, "node1", 1) == "running"
    assert re.search(r"paused [0-9.]+ s for snapshot 0 \(2 disk", result.stderr), result.stderr
    taken = linstor_snapshots(env)
    assert {"linstor_un-vmsnap-1-0"} <= taken["one-vm-1-disk-0"] and {"linstor_un-vmsnap-1-0"} <= taken["one-vm-1-disk-1"]
    rd = env.rds()["one-vm-1-vmsnap-0"]
    assert rd["Aux/one/linstor_un/MADE_FOR"].endswith("snapshot 0 memory") and "Aux/one/linstor_un/BUILDING" not in rd
    # the guest goes on: a key in memory and on disk 0, other bytes on disk 1
    press(env, "node1", 1, "b")
    env.lab.write_device("node1", disk_path(1, 1), b"\xee" * 4096)
    result = act(env, vm, "revert", snap)
    assert result.ok, str(result)
    assert state(env, "node1", 1) == "running"
    assert remembered(env, "node1", 1) == ord("a")              # the memory of that instant
    assert sector(env, "node1", 1) == b"a" * 512                 # and what the guest had written then
    assert env.read("node1", disk_path(1, 1), 0, 4096) == first
    assert not any(n.startswith("linstor_un-vmrevert") for names in linstor_snapshots(env).values() for n in names)
    press(env, "node1", 1, "c")                                 # the guest runs on from there
    # a second revert to the same snapshot, then delete
    assert act(env, vm, "revert", snap).ok
    assert remembered(env, "node1", 1) == ord("a") and sector(env, "node1", 1) == b"a" * 512
    result = act(env, vm, "delete", snap)
    assert result.ok, str(result)
    assert "one-vm-1-vmsnap-0" not in env.rds()
    assert not any("vmsnap" in n for names in linstor_snapshots(env).values() for n in names)
    destroy(env, "node1", 1)


def test_oned_7_quotes_the_revert_parameters_and_6_does_not(venv):
    """7.x runs revert as a VmmAction step ('<deploy_id>' '<hypervisor id>'); the same action from
    an older runner gets them bare: both work, and delete is the same on every release."""
    env = venv
    vm = running_vm(env, 2, ndisks=1)
    result, snap = create(env, vm)
    assert result.ok, str(result)
    press(env, "node1", 2, "d")
    old = env.lab.runner("6.6.0")
    vm.activate_snapshot(0, "REVERT")
    done = old.vm_snapshot("revert", "one-2", snap["HYPERVISOR_ID"], 2, "node1", data(env, vm, "node1"))
    assert done.ok, str(done)
    assert remembered(env, "node1", 2) == ord("a")
    assert act(env, vm, "delete", snap).ok
    destroy(env, "node1", 2)


def test_a_failed_create_leaves_nothing_and_the_vm_running(venv):
    env = venv
    vm = running_vm(env, 3)
    before_rds, before_snaps = set(env.rds()), linstor_snapshots(env)
    env.lab.linstor.add_fault("/actions/snapshot/multi$", "rc", method="POST", ret_code=-4611686018427387102,
                              message="injected snapshot failure")
    result, _ = create(env, vm)
    env.lab.linstor.clear_faults()
    assert result.rc != 0 and "injected snapshot failure" in result.stderr, str(result)
    assert len(result.stderr.strip().splitlines()[-1]) < 400
    assert state(env, "node1", 3) == "running"                  # resumed
    assert set(env.rds()) == before_rds and linstor_snapshots(env) == before_snaps
    props = env.rds()["one-vm-3-disk-0"]
    assert not any(k.startswith("Aux/one/linstor_un/SNAPSHOT/") for k in props)
    # libvirt failing to write the memory
    shim = env.lab.host("node1").path("/usr/local/bin") / "virsh"
    shim.write_text('#!/bin/sh\ncase " $* " in *" snapshot-create-as "*) echo "injected: no memory" >&2; exit 1;; '
                    'esac\nexec /usr/bin/virsh "$@"\n')
    shim.chmod(0o755)
    try:
        result, _ = create(env, vm)
    finally:
        shim.unlink()
    assert result.rc != 0 and "injected: no memory" in result.stderr
    assert state(env, "node1", 3) == "running"
    assert set(env.rds()) == before_rds and linstor_snapshots(env) == before_snaps
    result, snap = create(env, vm)                              # and then it works
    assert result.ok, str(result)
    assert result.stdout.strip() == f"linstor_un-vmsnap-3-{snap['SNAPSHOT_ID']}"
    destroy(env, "node1", 3)


def test_a_failed_revert_puts_the_disks_back_and_boots_the_vm(venv):
    env = venv
    vm = running_vm(env, 4)
    result, snap = create(env, vm)
    assert result.ok, str(result)
    press(env, "node1", 4, "b")
    shim = env.lab.host("node1").path("/usr/local/bin") / "virsh"
    shim.write_text('#!/bin/sh\ncase " $* " in *" restore "*) echo "injected: restore failed" >&2; exit 1;; '
                    'esac\nexec /usr/bin/virsh "$@"\n')
    shim.chmod(0o755)
    try:
        result = act(env, vm, "revert", snap)
    finally:
        shim.unlink()
    assert result.rc != 0 and "injected: restore failed" in result.stderr, str(result)
    assert state(env, "node1", 4) == "running"                  # booted again from its disks
    assert sector(env, "node1", 4) == b"b" * 512                # as they were before the revert
    assert not any(n.startswith("linstor_un-vmrevert") for names in linstor_snapshots(env).values() for n in names)
    assert "linstor_un-vmsnap-4-0" in linstor_snapshots(env)["one-vm-4-disk-0"]   # the snapshot stays
    press(env, "node1", 4, "e")
    result = act(env, vm, "revert", snap)                       # and the retry works
    assert result.ok, str(result)
    assert remembered(env, "node1", 4) == ord("a") and sector(env, "node1", 4) == b"a" * 512
    destroy(env, "node1", 4)


def test_a_revert_refuses_when_the_disks_changed_since(venv):
    env = venv
    vm = running_vm(env, 5, ndisks=1)
    result, snap = create(env, vm)
    assert result.ok, str(result)
    # a disk attached after the snapshot
    vm.disks.append(Disk(1, SYSTEM_DS, size=16))
    assert env.r.tm("mkimage", 16, "raw", f"node1:{disk_path(5, 1)}", 5, SYSTEM_DS).ok
    press(env, "node1", 5, "b")
    result = act(env, vm, "revert", snap)
    assert result.rc != 0 and "attached or detached" in result.stderr, str(result)
    assert state(env, "node1", 5) == "running" and remembered(env, "node1", 5) == ord("b")
    destroy(env, "node1", 5)


def test_terminate_takes_the_snapshots_with_it(venv):
    env = venv
    vm = running_vm(env, 6)
    assert create(env, vm)[0].ok and create(env, vm)[0].ok
    destroy(env, "node1", 6)
    vm.lcm_state = "EPILOG"
    env.lab.oned.add(vm)
    for i in (0, 1):
        assert env.r.tm("delete", f"node1:{disk_path(6, i)}", 6, SYSTEM_DS).ok
    assert env.r.tm("delete", f"node1:/var/lib/one//datastores/{SYSTEM_DS}/6", 6, SYSTEM_DS).ok
    assert not [n for n in env.rds() if n.startswith("one-vm-6-")]
    assert not [r for r in linstor_snapshots(env) if r.startswith("one-vm-6-")]


def test_snapshots_oned_no_longer_lists_are_removed(venv):
    """Without KEEP_SNAPSHOTS oned drops a VM's snapshots on poweroff or migration, calling no
    driver: the next VM snapshot action removes what they held."""
    env = venv
    vm = running_vm(env, 7, ndisks=1)
    assert create(env, vm)[0].ok
    vm.snapshots.clear()                                        # LifeCycleManager: delete_snapshots()
    result, snap = create(env, vm)
    assert result.ok and snap["SNAPSHOT_ID"] == 0               # oned numbers from 0 again
    assert sorted(n for n in env.rds() if n.startswith("one-vm-7-vmsnap")) == ["one-vm-7-vmsnap-0"]
    assert sorted(n for n in linstor_snapshots(env)["one-vm-7-disk-0"] if "vmsnap" in n) == ["linstor_un-vmsnap-7-0"]
    destroy(env, "node1", 7)


def test_vms_without_linstor_disks_go_to_the_stock_scripts_and_mixes_are_refused(venv):
    env = venv
    env.lab.oned.add(Datastore(0, "system", "SYSTEM_DS", ds_mad="-", tm_mad="ssh", template={"TM_MAD": "ssh"}))
    vm = VM(8, disks=[Disk(0, 0, tm_mad="ssh")], history=[History("node1", 0, tm_mad="ssh")])
    env.lab.oned.add(vm)
    stock = env.lab.host("node1").path("/var/tmp/one") / "vmm" / "kvm"
    stock.mkdir(parents=True, exist_ok=True)
    for name in ("snapshot_create", "snapshot_revert", "snapshot_delete"):
        (stock / name).write_text(f'#!/bin/sh\necho "$@" > /var/tmp/one/{name}.args\ncat > /dev/null\n'
                                  f'echo snap-0\n')
        (stock / name).chmod(0o755)
    snap = vm.new_snapshot()
    done = env.r.vm_snapshot("create", "one-8", "0", 8, "node1", data(env, vm, "node1", ds=0))
    assert done.ok, str(done)
    assert done.stdout.strip() == "snap-0"
    assert (stock.parent.parent / "snapshot_create.args").read_text().split() == ["one-8", "0", "8", "node1"]
    snap["HYPERVISOR_ID"] = "snap-0"
    vm.activate_snapshot(0, "REVERT")
    assert env.r.vm_snapshot("revert", "one-8", "snap-0", 8, "node1", data(env, vm, "node1", ds=0)).ok
    assert (stock.parent.parent / "snapshot_revert.args").read_text().split() == ["one-8", "snap-0", "8", "node1"]
    # one linstor_un disk and one writable disk of another driver: no instant holds both
    mixed = env.vm(9, [Disk(0, SYSTEM_DS, size=16), Disk(1, 0, tm_mad="ssh")], lcm="RUNNING")
    mixed.new_snapshot()
    before = set(env.rds())
    done = env.r.vm_snapshot("create", "one-9", "0", 9, "node1", data(env, mixed, "node1"))
    assert done.rc != 0 and "disk 1 (ssh)" in done.stderr, str(done)
    assert set(env.rds()) == before


def hang_virsh(env, host, subcommand: str, marker: str):
    """`virsh <subcommand>` on host hangs (after marking its start); returns the kill_when predicate."""
    shim = env.lab.host(host).path("/usr/local/bin") / "virsh"
    shim.write_text(f'#!/bin/sh\ncase " $* " in *" {subcommand} "*) mkdir -p /var/tmp/one; '
                    f'touch /var/tmp/one/{marker}; exec sleep 3600;; esac\nexec /usr/bin/virsh "$@"\n')
    shim.chmod(0o755)
    path = env.lab.host(host).path("/var/tmp/one") / marker
    return lambda: path.exists()


def unhang(env, host="node1"):
    env.lab.linstor.clear_faults()
    shim = env.lab.host(host).path("/usr/local/bin") / "virsh"
    if shim.exists():
        shim.unlink()


def ours_left(env, vm_id) -> tuple[set, set]:
    """This VM's memory volumes and temporary resources, and every VM snapshot name on its disks."""
    rds = {n for n in env.rds() if n.startswith(f"one-vm-{vm_id}-") and "-disk-" not in n or n.endswith("-tmp")}
    snaps = {n for r, names in linstor_snapshots(env).items() if r.startswith(f"one-vm-{vm_id}-") for n in names}
    return rds, snaps


KILL_POINTS = [
    ("create", "virsh", "snapshot-create-as"),            # the guest paused, its memory being written
    ("create", "POST", r"/actions/snapshot/multi$"),      # the disks' snapshots taken, no reply yet
    ("revert", "virsh", "restore"),                       # the domain stopped, its disks reverted
    ("revert", "POST", r"/snapshot-rollback/"),           # a disk being rolled back
    ("delete", "DELETE", r"/snapshots/linstor_un-vmsnap-"),   # one disk's snapshot going
]


@pytest.mark.parametrize("index", range(len(KILL_POINTS)))
def test_killed_at_each_step_then_retried(venv, index):
    """SIGKILL (the driver crashing, oned's timeout) in the middle of a step; the same action again
    converges: the guest runs, the snapshot is whole (or gone), nothing is left over."""
    env, (action, kind, what) = venv, KILL_POINTS[index]
    vm_id = 20 + index
    vm = running_vm(env, vm_id)
    snap = None
    if action != "create":
        result, snap = create(env, vm)
        assert result.ok, str(result)
        press(env, "node1", vm_id, "b")
    if kind == "virsh":
        kill_when = hang_virsh(env, "node1", what, f"hang-{vm_id}")
    else:
        env.lab.linstor.add_fault(what, "delay_after", method=kind, seconds=30)
        kill_when = when_request(env, kind, what, after=0.3)
    if action == "create":
        killed, snap = create(env, vm, kill_when=kill_when)
        snap = snap if killed.ok else vm.new_snapshot()     # oned: a failure; the user asks again
        snap_id = snap["SNAPSHOT_ID"]
    else:
        killed = act(env, vm, action, snap, kill_when=kill_when)
    unhang(env)
    assert killed.rc == -9, str(killed)
    if action == "create":
        vm.snapshots.remove(snap)
        snap = vm.new_snapshot()
        assert snap["SNAPSHOT_ID"] == snap_id
        done = env.r.vm_snapshot("create", f"one-{vm_id}", str(snap_id), vm_id, "node1", data(env, vm, "node1"))
        assert done.ok, str(done)
        snap["HYPERVISOR_ID"] = done.stdout.split()[0]
        assert state(env, "node1", vm_id) == "running"      # resumed, also after the kill while paused
        press(env, "node1", vm_id, "b")
        assert act(env, vm, "revert", snap).ok              # the retry's snapshot is whole
        assert remembered(env, "node1", vm_id) == ord("a") and sector(env, "node1", vm_id) == b"a" * 512
        assert ours_left(env, vm_id) == ({f"one-vm-{vm_id}-vmsnap-0"}, {f"linstor_un-vmsnap-{vm_id}-0"})
    elif action == "revert":
        done = act(env, vm, "revert", snap)
        assert done.ok, str(done)
        assert state(env, "node1", vm_id) == "running"
        assert remembered(env, "node1", vm_id) == ord("a") and sector(env, "node1", vm_id) == b"a" * 512
        assert ours_left(env, vm_id) == ({f"one-vm-{vm_id}-vmsnap-0"}, {f"linstor_un-vmsnap-{vm_id}-0"})
    else:
        done = act(env, vm, "delete", snap)
        assert done.ok, str(done)
        assert ours_left(env, vm_id) == (set(), set())
    destroy(env, "node1", vm_id)


def test_a_full_backup_keeps_the_snapshots_and_a_restore_drops_them(venv):
    """OpenNebula backs up a VM with snapshots in FULL mode (INCREMENT is refused with them) and
    forgets every VM snapshot once a backup is restored into it (trigger_disk_restore_success)."""
    env = venv
    vm = running_vm(env, 30)
    result, snap = create(env, vm)
    assert result.ok, str(result)
    press(env, "node1", 30, "b")
    vm.backup_config = {"MODE": "FULL", "LAST_INCREMENT_ID": -1, "FS_FREEZE": "NONE"}
    run = env.bds.backup(env.r, vm, [0, 1], live=True)
    assert run.ok, f"{run.pre}\n{run.post}"
    assert env.bds.restored_bytes(run.image_id, 0)[512:1024] == b"b" * 512      # the disk as it is
    assert "linstor_un-vmsnap-30-0" in linstor_snapshots(env)["one-vm-30-disk-0"]
    assert act(env, vm, "revert", snap).ok                                       # still whole
    assert remembered(env, "node1", 30) == ord("a")
    destroy(env, "node1", 30)
    vm.state, vm.lcm_state = "POWEROFF", "LCM_INIT"
    env.lab.oned.add(vm)
    result = env.r.tm("restore", f"node1:/var/lib/one//datastores/{SYSTEM_DS}/30", 30, run.image_id, -1, -1)
    assert result.ok, str(result)
    assert ours_left(env, 30) == (set(), set())
    vm.state, vm.lcm_state = "ACTIVE", "RUNNING"


def test_after_a_cold_migration_the_revert_runs_on_the_new_host(venv):
    """onevm migrate (not live): save, the disks move, restore on the other host; the snapshot
    (memory volume and disks' snapshots in LINSTOR) is reverted to there."""
    env = venv
    vm = running_vm(env, 31)
    result, snap = create(env, vm)
    assert result.ok, str(result)
    press(env, "node1", 31, "b")
    ckpt = f"/var/lib/one//datastores/{SYSTEM_DS}/31/checkpoint"
    assert env.r.save("one-31", ckpt, "node1", 31, data(env, vm, "node1")).ok
    for i in (0, 1):
        assert env.r.tm("mv", f"node1:{disk_path(31, i)}", f"node2:{disk_path(31, i)}", 31, SYSTEM_DS).ok
    assert env.r.tm("mv", f"node1:/var/lib/one//datastores/{SYSTEM_DS}/31",
                    f"node2:/var/lib/one//datastores/{SYSTEM_DS}/31", 31, SYSTEM_DS).ok
    vm.history.append(History("node2", SYSTEM_DS))
    assert env.r.restore(ckpt, "node2", "one-31", 31, data(env, vm, "node2")).ok
    assert remembered(env, "node2", 31) == ord("b")
    result = act(env, vm, "revert", snap, host="node2")
    assert result.ok, str(result)
    assert state(env, "node2", 31) == "running" and state(env, "node1", 31) == "absent"
    assert remembered(env, "node2", 31) == ord("a") and sector(env, "node2", 31) == b"a" * 512
    destroy(env, "node2", 31)


def test_a_persistent_image_detached_leaves_without_the_vms_snapshots(venv):
    env = venv
    img = env.image(32, size_mb=16, persistent=True)
    vm = env.vm(32, [Disk(0, SYSTEM_DS, size=16), Disk(1, IMAGE_DS, image_id=32, source=img.source, size=16,
                                                       persistent=True)], lcm="RUNNING")
    assert env.r.tm("mkimage", 16, "raw", f"node1:{disk_path(32, 0)}", 32, SYSTEM_DS).ok
    assert env.r.tm("ln", f"{FRONTEND}:{img.source}", f"node1:{disk_path(32, 1)}", 32, IMAGE_DS).ok
    env.lab.write_device("node1", disk_path(32, 0), BOOT)
    boot(env, 32, "node1", 2)
    press(env, "node1", 32, "a")
    result, snap = create(env, vm)
    assert result.ok, str(result)
    assert "linstor_un-vmsnap-32-0" in linstor_snapshots(env)["one-image-32"]
    destroy(env, "node1", 32)
    assert env.r.tm("mvds", f"node1:{disk_path(32, 1)}", f"{img.source}", 32, IMAGE_DS).ok
    assert "linstor_un-vmsnap-32-0" not in linstor_snapshots(env).get("one-image-32", set())
    assert "linstor_un-vmsnap-32-0" in linstor_snapshots(env)["one-vm-32-disk-0"]   # the VM's own disk keeps it


@pytest.fixture(scope="module")
def old_env():
    with Lab(LabConfig(hosts=2, libvirt=True, linstor_version="1.20.0")) as lab:
        yield Env(lab)


def test_on_linstor_before_1_31_a_revert_copies_from_the_snapshot(old_env):
    """LINSTOR before 1.31 rolls back only to a disk's newest snapshot (and the state a revert keeps
    is newer): each disk is restored from the VM snapshot and copied back. The bytes and the memory
    come back all the same; a second snapshot in between changes nothing."""
    env = old_env
    first = os.urandom(4096)
    vm = running_vm(env, 40, data=first)
    result, snap = create(env, vm)
    assert result.ok, str(result)
    press(env, "node1", 40, "b")
    env.lab.write_device("node1", disk_path(40, 1), b"\xee" * 4096)
    later, _ = create(env, vm)
    assert later.ok, str(later)
    result = act(env, vm, "revert", snap)
    assert result.ok, str(result)
    assert "restored through" in result.stderr
    assert remembered(env, "node1", 40) == ord("a") and sector(env, "node1", 40) == b"a" * 512
    assert env.read("node1", disk_path(40, 1), 0, 4096) == first
    assert not [n for n in env.rds() if n.endswith("-tmp")]
    destroy(env, "node1", 40)


def test_a_disk_snapshot_revert_leaves_the_vm_snapshots_whole(venv):
    """disk-snapshot-revert (POWEROFF) rolls one disk back; the VM snapshot taken after that disk
    snapshot is still there and gives back its own instant afterwards."""
    env = venv
    vm = running_vm(env, 33)
    vm.disks[0].snapshots = [{"id": 0, "name": "before", "active": False}]
    assert env.r.tm("snap_create", f"node1:{disk_path(33, 0)}", 0, 33, SYSTEM_DS).ok     # sector 'a'
    press(env, "node1", 33, "b")
    result, snap = create(env, vm)
    assert result.ok, str(result)
    press(env, "node1", 33, "c")
    destroy(env, "node1", 33)
    vm.lcm_state = "DISK_SNAPSHOT_REVERT_POWEROFF"
    env.lab.oned.add(vm)
    assert env.r.tm("snap_revert", f"node1:{disk_path(33, 0)}", 0, 33, SYSTEM_DS).ok
    assert sector(env, "node1", 33) == b"a" * 512
    vm.lcm_state = "RUNNING"
    boot(env, 33, "node1", 2)
    result = act(env, vm, "revert", snap)
    assert result.ok, str(result)
    assert remembered(env, "node1", 33) == ord("b") and sector(env, "node1", 33) == b"b" * 512
    destroy(env, "node1", 33)


def test_a_snapshot_is_deleted_while_the_vm_is_powered_off(venv):
    """With KEEP_SNAPSHOTS oned deletes a VM snapshot in POWEROFF too (DispatchManager::
    snapshot_delete): no domain is needed for it."""
    env = venv
    vm = running_vm(env, 34, ndisks=1)
    result, snap = create(env, vm)
    assert result.ok, str(result)
    destroy(env, "node1", 34)
    vm.state, vm.lcm_state = "POWEROFF", "LCM_INIT"
    result = act(env, vm, "delete", snap)
    assert result.ok, str(result)
    assert ours_left(env, 34) == (set(), set())


def test_a_disk_grown_after_the_snapshot_keeps_its_size_when_reverted(venv):
    """oned lets a disk grow while VM snapshots exist (live resize) and keeps DISK/SIZE after a
    revert: the disk keeps its new size and holds the snapshot's bytes where they were."""
    env = venv
    first = os.urandom(4096)
    vm = running_vm(env, 35, data=first)
    result, snap = create(env, vm)
    assert result.ok, str(result)
    vm.lcm_state = "DISK_RESIZE"
    env.lab.oned.add(vm)
    grown = env.r.tm("resize", f"node1:{disk_path(35, 1)}", 32, 35, SYSTEM_DS)
    assert grown.ok, str(grown)
    vm.disks[1].size, vm.lcm_state = 32, "RUNNING"
    env.lab.write_device("node1", disk_path(35, 1), b"\xee" * 4096)
    result = act(env, vm, "revert", snap)
    assert result.ok, str(result)
    size = int(env.lab.host("node1").run_inside(f"blockdev --getsize64 {disk_path(35, 1)}").stdout)
    assert size == 32 << 20
    assert env.read("node1", disk_path(35, 1), 0, 4096) == first
    assert remembered(env, "node1", 35) == ord("a")
    destroy(env, "node1", 35)
