"""The bash driver's bugs (reference/bash-driver.md §4), each with a test that fails on the bash behaviour."""
from __future__ import annotations

import concurrent.futures
import re

import pytest

from lab.lab import FRONTEND, IMAGE_DS, SYSTEM_DS, Lab, LabConfig
from lab.oned import Disk, History
from lab.oned import to_xml

from .conftest import PATTERN, SYS, Env, disk_path


def ok(result):
    assert result.ok, str(result)
    return result


def diskful_nodes(env, res):
    return sorted(n for n, flags in env.replicas(res).items() if "DISKLESS" not in flags)


def set_ds(env, ds, **attrs):
    env.lab.oned.datastores[ds].template.update(attrs)


def test_bug3_replica_count_without_resource_group(env):
    set_ds(env, SYSTEM_DS, RESOURCE_GROUP="", REPLICA_COUNT="2", STORAGE_POOL="data")
    env.vm(20, [Disk(0, SYSTEM_DS, size=8)])
    ok(env.r.tm("mkimage", 8, "raw", f"node1:{disk_path(20, 0)}", 20, SYSTEM_DS))
    assert len(diskful_nodes(env, "one-vm-20-disk-0")) == 2


def test_bug4_prefer_node_places_a_replica_on_the_vm_host(env):
    set_ds(env, SYSTEM_DS, RESOURCE_GROUP="", REPLICA_COUNT="1", STORAGE_POOL="data", PREFER_NODE="YES")
    for vm, host in ((21, "node3"), (22, "node2")):
        env.vm(vm, [Disk(0, SYSTEM_DS, size=8)], host=host)
        ok(env.r.tm("mkimage", 8, "raw", f"{host}:{disk_path(vm, 0)}", vm, SYSTEM_DS))
        assert diskful_nodes(env, f"one-vm-{vm}-disk-0") == [host]
    set_ds(env, SYSTEM_DS, RESOURCE_GROUP="one_rg", REPLICA_COUNT="", STORAGE_POOL="")
    env.vm(23, [Disk(0, SYSTEM_DS, size=8)], host="node3")
    ok(env.r.tm("mkimage", 8, "raw", f"node3:{disk_path(23, 0)}", 23, SYSTEM_DS))
    nodes = diskful_nodes(env, "one-vm-23-disk-0")
    assert "node3" in nodes and len(nodes) == 2           # the group's place count, host included


def test_bug22_device_path_from_linstor_for_a_storage_only_layer(env):
    set_ds(env, SYSTEM_DS, RESOURCE_GROUP="", NODE_LIST="node1", STORAGE_POOL="data", LAYER_LIST="storage")
    env.vm(24, [Disk(0, SYSTEM_DS, type="fs", fs="xfs", size=300)])
    ok(env.r.tm("mkimage", 300, "raw", f"node1:{disk_path(24, 0)}", 24, SYSTEM_DS))
    assert env.link("node1", disk_path(24, 0)) == "/dev/linstor_data/one-vm-24-disk-0_00000"
    out = env.lab.host("node1").run_inside(f"blkid -o value -s TYPE {disk_path(24, 0)}").stdout.strip()
    assert out == b"xfs"                                   # BUG-18: the disk's FS is honoured


def test_bug18_23_volatile_formats(env):
    env.vm(25, [Disk(0, SYSTEM_DS, size=16), Disk(1, SYSTEM_DS, type="fs", fs="ext3", size=16)])
    ok(env.r.tm("mkimage", 16, "qcow2", f"node1:{disk_path(25, 0)}", 25, SYSTEM_DS))
    host = env.lab.host("node1")
    info = host.run_inside(f"qemu-img info {disk_path(25, 0)}").stdout.decode()
    assert "file format: qcow2" in info
    # the device is still the LINSTOR device, not a file put in its place
    assert host.run_inside(f"test -b $(readlink -f {disk_path(25, 0)})", check=False).returncode == 0
    ok(env.r.tm("mkimage", 16, "raw", f"node1:{disk_path(25, 1)}", 25, SYSTEM_DS))
    assert host.run_inside(f"blkid -o value -s TYPE {disk_path(25, 1)}").stdout.strip() == b"ext3"
    bad = env.vm(26, [Disk(0, SYSTEM_DS, type="fs", fs="ext4; touch /tmp/pwned", size=16)])
    result = env.r.tm("mkimage", 16, "raw", f"node1:{disk_path(26, 0)}", 26, SYSTEM_DS)
    assert result.rc != 0 and "unsupported filesystem" in result.stderr
    assert "one-vm-26-disk-0" not in env.rds()


def test_bug14_mv_records_the_new_system_datastore(env):
    img = env.image(30, data=PATTERN)
    vm = env.vm(31, [Disk(0, IMAGE_DS, image_id=30, source=img.source, size=32)])
    ok(env.clone(img, 31, 0))
    vm.lcm_state = "PROLOG_MIGRATE_POWEROFF"
    vm.history.append(History("node2", 102))                  # oned's record of the move
    env.lab.oned.add(vm)
    new = "/var/lib/one//datastores/102/31/disk.0"
    from lab.oned import Datastore
    env.lab.oned.add(Datastore(102, "linstor_system2", "SYSTEM_DS", ds_mad="-", template=env.lab.datastore_template()))
    ok(env.r.tm("mv", f"node1:{disk_path(31, 0)}", f"node2:{new}", 31, IMAGE_DS))
    assert env.rds()["one-vm-31-disk-0"]["Aux/one/DS_ID"] == "102"    # not the image DS (100)
    assert env.read("node2", new) == PATTERN


def test_bug15_shared_image_stays_while_another_vm_uses_it(env):
    img = env.image(40, data=PATTERN)
    for vm in (41, 42):
        env.vm(vm, [Disk(0, IMAGE_DS, image_id=40, source=img.source, type="CDROM", size=32,
                         extra={"CLONE": "NO", "READONLY": "YES"})])
        ok(env.r.tm("ln", f"{FRONTEND}:{img.source}", f"node1:{disk_path(vm, 0)}", vm, IMAGE_DS))
    assert "Aux/one/VM_ID" not in env.rds()["one-image-40"]          # BUG-17: shared image untouched
    on_node1 = env.replicas("one-image-40").get("node1")
    ok(env.r.tm("delete", f"node1:{disk_path(41, 0)}", 41, IMAGE_DS))
    assert env.replicas("one-image-40").get("node1") == on_node1     # VM 42 still links it
    assert env.read("node1", disk_path(42, 0)) == PATTERN
    ok(env.r.tm("delete", f"node1:{disk_path(42, 0)}", 42, IMAGE_DS))
    after = env.replicas("one-image-40").get("node1")
    if on_node1 is not None and "DISKLESS" in on_node1:
        assert after is None or "TIE_BREAKER" in after


def test_bug16_called_from_another_tm_keeps_its_hands_off_the_vm_dir(env):
    img = env.image(50, data=PATTERN)
    vm = env.vm(51, [Disk(0, IMAGE_DS, image_id=50, source=img.source, size=32)], lcm="RUNNING")
    ok(env.clone(img, 51, 0))
    for host in ("node1", "node2"):
        env.lab.host(host).run_inside(f"mkdir -p {SYS}/51 && echo live > {SYS}/51/marker")
    xml = to_xml(vm.element())
    ok(env.r.migrate("premigrate", "node1", "node2", f"{SYS}/51", 51, SYSTEM_DS, xml, caller="shared"))
    assert env.read("node2", disk_path(51, 0)) == PATTERN           # our disk: attached on the target
    ok(env.r.migrate("postmigrate", "node1", "node2", f"{SYS}/51", 51, SYSTEM_DS, xml, caller="shared"))
    for host in ("node1", "node2"):                                  # the other TM's directory: untouched
        assert env.lab.host(host).run_inside(f"cat {SYS}/51/marker").stdout == b"live\n"


@pytest.mark.parametrize("server", ["1.20.0", "1.31.0", "1.31.1", "1.31.2"])
def test_bug12_13_revert_any_snapshot_on_each_server(server):
    """Before 1.31.0 LINSTOR rolls back only to the newest snapshot: an older one is copied back
    through a temporary resource; from 1.31.0 LINSTOR's own rollback does it."""
    copies = server < "1.31.0"
    with Lab(LabConfig(hosts=3, linstor_version=server)) as lab:
        env = Env(lab)
        img = env.image(60, data=PATTERN)
        env.vm(61, [Disk(0, IMAGE_DS, image_id=60, source=img.source, size=32)], lcm="LCM_INIT", state="POWEROFF")
        ok(env.clone(img, 61, 0))
        path = disk_path(61, 0)
        for snap, data in ((9, b"9" * 4096), (10, b"A" * 4096)):
            lab.write_device("node1", path, data)
            ok(env.r.tm("snap_create", f"node1:{path}", snap, 61, IMAGE_DS))
        lab.write_device("node1", path, b"Q" * 4096, 4 << 20)
        result = env.r.tm("snap_revert", f"node1:{path}", 9, 61, IMAGE_DS)     # not the newest
        ok(result)
        assert ("restored through" in result.stderr) == copies, result.stderr
        assert env.read("node1", path) == b"9" * 4096
        assert env.read("node1", path, 4 << 20) == b"\0" * 4096          # zeros restored too
        ok(env.r.tm("snap_revert", f"node1:{path}", 9, 61, IMAGE_DS))     # twice in a row (BUG-7)
        ok(env.r.tm("snap_revert", f"node1:{path}", 10, 61, IMAGE_DS))    # newest by time, not name
        assert env.read("node1", path) == b"A" * 4096
        assert not [n for n in env.rds() if n.endswith("-tmp")]
        assert lab.linstor.violations() == []


def test_bug28_monitor_cost_does_not_grow_with_resources(env):
    def monitor_requests():
        ds = env.lab.oned.datastores[SYSTEM_DS]
        from lab.runner import ds_action_data
        data = ds_action_data("", to_xml(ds.element()), "<MONITOR_VM_DISKS>1</MONITOR_VM_DISKS>")
        mark = len(env.lab.linstor.requests())
        ok(env.r.tm_monitor(data, SYSTEM_DS))
        return len(env.lab.linstor.requests()) - mark

    with env.lab.client() as c:
        def add(n):
            name = f"one-vm-{n}-disk-0"
            c.resource_dfn_create(name, resource_group="one_rg")
            c.resource_dfn_modify(name, {"Aux/one/VM_ID": str(n), "Aux/one/DS_ID": str(SYSTEM_DS),
                                         "Aux/one/DISK_ID": "0"})
        for n in range(700, 703):
            add(n)
        few = monitor_requests()
        for n in range(703, 760):
            add(n)
        many = monitor_requests()
    assert few == many <= 6


def test_bug29_save_as_of_a_stopped_vm(env):
    img = env.image(70, data=PATTERN)
    vm = env.vm(71, [Disk(0, IMAGE_DS, image_id=70, source=img.source, size=32)])
    ok(env.clone(img, 71, 0))
    vm.state, vm.lcm_state = "STOPPED", "LCM_INIT"
    env.lab.oned.add(vm)
    env.save_as_target(72)
    ok(env.r.tm("cpds", f"{FRONTEND}:{disk_path(71, 0)}", "/dev/drbd/by-res/one-image-72/0", -1, 71, IMAGE_DS))
    with env.lab.client() as c:
        c.resource_make_available("node2", "one-image-72")
    assert env.lab.read_device("node2", "/dev/drbd/by-res/one-image-72/0") == PATTERN


def test_bug2_tls_with_ca_verification():
    with Lab(LabConfig(hosts=2, tls=True)) as lab:
        env = Env(lab)
        img = env.image(80, data=PATTERN)
        env.vm(81, [Disk(0, IMAGE_DS, image_id=80, source=img.source, size=32)])
        ok(env.clone(img, 81, 0))
        assert env.read("node1", disk_path(81, 0)) == PATTERN
        # a CA that did not sign the controller's certificate: refused, nothing created
        set_ds(env, SYSTEM_DS, LS_CAFILE=lab.tls["rogue_cert"])
        env.vm(82, [Disk(0, IMAGE_DS, image_id=80, source=img.source, size=32)])
        result = env.clone(img, 82, 0)
        assert result.rc != 0 and "cannot reach any LINSTOR controller" in result.stderr
        assert "one-vm-82-disk-0" not in env.rds()


def test_bug20_concurrent_clones_of_one_image_onto_one_host(env):
    set_ds(env, SYSTEM_DS, RESOURCE_GROUP="", NODE_LIST="node2", STORAGE_POOL="data")
    set_ds(env, IMAGE_DS, RESOURCE_GROUP="", NODE_LIST="node2", STORAGE_POOL="data")
    img = env.image(90, data=PATTERN, nodes=["node2", "node3"])      # nothing of it on node1
    vms = list(range(900, 915))
    for vm in vms:
        env.vm(vm, [Disk(0, IMAGE_DS, image_id=90, source=img.source, size=32)])
    with concurrent.futures.ThreadPoolExecutor(15) as pool:
        results = list(pool.map(lambda vm: env.clone(img, vm, 0), vms))
    assert all(r.ok for r in results), "\n".join(str(r) for r in results if not r.ok)
    for vm in vms:
        assert env.read("node1", disk_path(vm, 0)) == PATTERN
    # the image's temporary replica on node1 is gone; no temporary marks are left anywhere
    image_on_node1 = env.replicas("one-image-90").get("node1")
    assert image_on_node1 is None or "DISKLESS" not in image_on_node1 or "TIE_BREAKER" in image_on_node1
    with env.lab.client() as c:
        assert not [r for r in c.resource_list_raise().resources if "Aux/one/TEMPORARY" in r.properties]
    creates = [r for r in env.lab.linstor.requests()
               if r["method"] == "POST" and re.search(r"one-image-90/resources/node1/make-available$", r["path"])]
    assert 1 <= len(creates) <= len(vms)
