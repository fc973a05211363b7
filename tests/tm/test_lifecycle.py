"""A VM's storage through every TM action, checked on LINSTOR, on the hosts and in the bytes."""
from __future__ import annotations

import base64
import time
import zlib

from lab.lab import FRONTEND, IMAGE_DS, SYSTEM_DS
from lab.oned import Disk, History
from lab.runner import ds_action_data
from lab.oned import to_xml

from .conftest import PATTERN, SYS, disk_path

VM = 5


def ok(result):
    assert result.ok, str(result)
    return result


def diskless_on(env, res, host):
    flags = env.replicas(res).get(host)
    return flags is not None and "DISKLESS" in flags and "TIE_BREAKER" not in flags


def test_vm_storage_lifecycle(env):
    lab, r = env.lab, env.r
    img = env.image(3, data=PATTERN)
    pimg = env.image(4, size_mb=16, data=PATTERN[::-1], persistent=True)
    vm = env.vm(VM, [Disk(0, IMAGE_DS, image_id=3, source=img.source, size=64),
                     Disk(1, IMAGE_DS, image_id=4, source=pimg.source, size=16, persistent=True),
                     Disk(2, SYSTEM_DS, type="fs", fs="ext4", size=32),
                     Disk(3, SYSTEM_DS, type="swap", size=16)])
    vm.context = {"DISK_ID": 4, "TARGET": "hda"}
    lab.oned.add(vm)

    # ---- prolog ---------------------------------------------------------------------------------
    ok(env.clone(img, VM, 0))
    ok(r.tm("ln", f"{FRONTEND}:{pimg.source}", f"node1:{disk_path(VM, 1)}", VM, IMAGE_DS))
    ok(r.tm("mkimage", 32, "raw", f"node1:{disk_path(VM, 2)}", VM, SYSTEM_DS))
    ok(r.tm("mkswap", 16, f"node1:{disk_path(VM, 3)}", VM, SYSTEM_DS))
    ctx = lab.workdir / "context.sh"
    ctx.write_text("HOSTNAME='vm5'\n")
    extra = lab.workdir / "extra.txt"
    extra.write_text("hello")
    ok(r.tm("context", str(ctx), f"{extra}:greeting.txt", f"node1:{disk_path(VM, 4)}", VM, SYSTEM_DS))
    n1 = lab.host("node1")
    assert env.read("node1", disk_path(VM, 0)) == PATTERN
    assert env.read("node1", disk_path(VM, 1)) == PATTERN[::-1]
    assert n1.run_inside(f"blkid -o value -s TYPE {disk_path(VM, 2)}").stdout.strip() == b"ext4"
    assert n1.run_inside(f"blkid -o value -s TYPE {disk_path(VM, 3)}").stdout.strip() == b"swap"
    iso = n1.run_inside(f"blkid -o value -s LABEL {disk_path(VM, 4)}").stdout.strip()
    assert iso == b"CONTEXT"
    props = env.rds()
    assert props["one-image-4"]["Aux/one/VM_ID"] == str(VM)
    assert props["one-vm-5-disk-2"]["Aux/one/DISK_ID"] == "2"

    # ---- snapshot, revert (zeros included), resize ----------------------------------------------
    ok(r.tm("snap_create", f"node1:{disk_path(VM, 0)}", 0, VM, IMAGE_DS))
    lab.write_device("node1", disk_path(VM, 0), b"X" * 4096)
    lab.write_device("node1", disk_path(VM, 0), b"Y" * 4096, 8 << 20)
    ok(r.tm("snap_revert", f"node1:{disk_path(VM, 0)}", 0, VM, IMAGE_DS))
    assert env.read("node1", disk_path(VM, 0)) == PATTERN
    assert env.read("node1", disk_path(VM, 0), 8 << 20) == b"\0" * 4096
    assert "Aux/one/SNAPSHOT_0/DISK_SIZE" in env.rds()["one-vm-5-disk-0"]
    ok(r.tm("resize", f"node1:{disk_path(VM, 0)}", 128, VM, IMAGE_DS))
    assert int(n1.run_inside(f"blockdev --getsize64 {disk_path(VM, 0)}").stdout) == 128 << 20
    shrink = r.tm("resize", f"node1:{disk_path(VM, 0)}", 64, VM, IMAGE_DS)
    assert shrink.rc != 0 and "shrink" in shrink.stderr

    # ---- cold migration node1 -> node2 ----------------------------------------------------------
    vm.lcm_state = "PROLOG_MIGRATE_POWEROFF"
    lab.oned.add(vm)
    for d in range(4):
        ds = IMAGE_DS if d < 2 else SYSTEM_DS
        ok(r.tm("mv", f"node1:{disk_path(VM, d)}", f"node2:{disk_path(VM, d)}", VM, ds))
    ok(r.tm("mv", f"node1:{SYS}/{VM}", f"node2:{SYS}/{VM}", VM, SYSTEM_DS))
    assert env.read("node2", disk_path(VM, 0)) == PATTERN
    assert n1.run_inside(f"test -e {SYS}/{VM}", check=False).returncode != 0
    assert not diskless_on(env, "one-image-4", "node1")
    vm.history.append(History("node2", SYSTEM_DS))

    # ---- live migration node2 -> node3, and a failed one ----------------------------------------
    vm.lcm_state = "RUNNING"
    lab.oned.add(vm)
    ok(r.tm("context", str(ctx), f"node2:{disk_path(VM, 4)}", VM, SYSTEM_DS))
    vm_xml = to_xml(vm.element())
    ok(r.migrate("premigrate", "node2", "node3", f"{SYS}/{VM}", VM, SYSTEM_DS, vm_xml))
    assert env.read("node3", disk_path(VM, 0)) == PATTERN
    assert lab.host("node3").run_inside(f"test -f {disk_path(VM, 4)}", check=False).returncode == 0
    assert env.rds()["one-vm-5-disk-0"]["DrbdOptions/Net/allow-two-primaries"] == "yes"
    ok(r.migrate("failmigrate", "node2", "node3", f"{SYS}/{VM}", VM, SYSTEM_DS, vm_xml))
    assert "DrbdOptions/Net/allow-two-primaries" not in env.rds()["one-vm-5-disk-0"]
    assert lab.host("node3").run_inside(f"test -e {SYS}/{VM}", check=False).returncode != 0
    assert env.read("node2", disk_path(VM, 0)) == PATTERN          # the VM's side is untouched
    ok(r.migrate("premigrate", "node2", "node3", f"{SYS}/{VM}", VM, SYSTEM_DS, vm_xml))
    ok(r.migrate("postmigrate", "node2", "node3", f"{SYS}/{VM}", VM, SYSTEM_DS, vm_xml))
    assert lab.host("node2").run_inside(f"test -e {SYS}/{VM}", check=False).returncode != 0
    assert not diskless_on(env, "one-image-4", "node2")
    vm.history.append(History("node3", SYSTEM_DS))
    lab.oned.add(vm)

    # ---- save-as of disk 0 (powered off) and of snapshot 0 ---------------------------------------
    vm.lcm_state, vm.state = "LCM_INIT", "POWEROFF"
    lab.oned.add(vm)
    env.save_as_target(9)
    env.save_as_target(10)
    ok(r.tm("cpds", f"node3:{disk_path(VM, 0)}", "/dev/drbd/by-res/one-image-9/0", -1, VM, IMAGE_DS))
    lab.write_device("node3", disk_path(VM, 0), b"Z" * 4096)
    ok(r.tm("cpds", f"node3:{disk_path(VM, 0)}", "/dev/drbd/by-res/one-image-10/0", 0, VM, IMAGE_DS))
    with lab.client() as c:
        c.resource_make_available("node1", "one-image-9")
        c.resource_make_available("node1", "one-image-10")
    assert lab.read_device("node1", "/dev/drbd/by-res/one-image-9/0") == b"Z" * 0 + PATTERN
    assert lab.read_device("node1", "/dev/drbd/by-res/one-image-10/0") == PATTERN
    assert "one-vm-5-disk-0-tmp" not in env.rds()

    # ---- monitoring -------------------------------------------------------------------------------
    ds = lab.oned.datastores[SYSTEM_DS]
    data = ds_action_data("", to_xml(ds.element()), "<DATASTORE_LOCATION>/var/lib/one//datastores"
                          "</DATASTORE_LOCATION><MONITOR_VM_DISKS>1</MONITOR_VM_DISKS>")
    mon = ok(r.tm_monitor(data, SYSTEM_DS))
    lines = dict(line.split("=") for line in mon.stdout.split())
    assert set(lines) == {"USED_MB", "TOTAL_MB", "FREE_MB"}
    assert int(lines["TOTAL_MB"]) == 3 * 20 * 1024 // 2           # three 20 GiB pools, two replicas
    deadline = time.time() + 5
    while not lab.monitor.messages and time.time() < deadline:
        time.sleep(0.05)
    msg = lab.monitor.messages[-1]
    assert msg["type"] == "MONITOR_VM" and msg["result"] == "SUCCESS"
    monitor_b64 = msg["payload"].split('MONITOR = "')[1].split('"')[0]
    vm_sizes = base64.b64decode(monitor_b64).decode()
    assert "DISK_SIZE=[ID=0," in vm_sizes and "DISK_SIZE=[ID=2," in vm_sizes
    assert "SNAPSHOT_SIZE=[ID=0,DISK_ID=0," in vm_sizes

    # ---- epilog ---------------------------------------------------------------------------------
    vm.lcm_state, vm.state = "EPILOG", "ACTIVE"
    lab.oned.add(vm)
    ok(r.tm("delete", f"node3:{disk_path(VM, 0)}", VM, IMAGE_DS))
    ok(r.tm("mvds", f"node3:{disk_path(VM, 1)}", pimg.source, VM, IMAGE_DS))
    ok(r.tm("delete", f"node3:{disk_path(VM, 2)}", VM, SYSTEM_DS))
    ok(r.tm("delete", f"node3:{disk_path(VM, 3)}", VM, SYSTEM_DS))
    ok(r.tm("delete", f"node3:{SYS}/{VM}", VM, SYSTEM_DS))
    left = env.rds()
    assert sorted(left) == ["one-image-10", "one-image-3", "one-image-4", "one-image-9"]
    assert not any(k.startswith("Aux/one/VM_ID") for k in left["one-image-4"])
    assert not diskless_on(env, "one-image-4", "node3")
    assert lab.host("node3").run_inside(f"test -e {SYS}/{VM}", check=False).returncode != 0
    # every action again: the same end state, exit 0
    ok(r.tm("delete", f"node3:{disk_path(VM, 0)}", VM, IMAGE_DS))
    ok(r.tm("delete", f"node3:{SYS}/{VM}", VM, SYSTEM_DS))
    assert sorted(env.rds()) == sorted(left)
