"""Live migration to another system datastore as OpenNebula 7.2+ does it (DS_LIVE_MIGRATE): the VM
stays on its host ("Cannot live migrate host and datastore at the same time",
VirtualMachineAPI.cc), so premigrate/postmigrate/failmigrate get the same host twice and the new
datastore's directory. The device stays in use on the host all along."""
from __future__ import annotations

import pytest

from lab.lab import SYSTEM_DS
from lab.oned import History, to_xml

from .conftest import PATTERN, SYS, disk_path
from .test_frontend_defects import SYS2, SYSTEM2, ok, running_vm_7_4

LIVE_MIGRATE = 2            # the ACTION of a history record a live migration ended (VMActions.h)
TWO_PRIMARIES = "DrbdOptions/Net/allow-two-primaries"


def exists(env, host: str, path: str) -> bool:
    return env.lab.host(host).run_inside(f"test -e {path} || test -L {path}", check=False).returncode == 0


def moving_on_its_host(lab, vm_id: int, version: str):
    """A running VM on node1 in SYSTEM_DS (a deployment file beside its disk link, a disk
    snapshot), in the middle of `onevm migrate --live <vm> node1 <SYSTEM2>`."""
    env, vm = running_vm_7_4(lab, vm_id)
    env.r = lab.runner(version)
    ok(env.r.tm("snap_create", f"node1:{disk_path(vm_id, 0)}", 0, vm_id, SYSTEM_DS))
    lab.host("node1").run_inside(f"echo '<domain/>' > {SYS}/{vm_id}/deployment.0")
    vm.lcm_state = "MIGRATE"
    vm.history[-1].action = LIVE_MIGRATE
    vm.history.append(History("node1", SYSTEM2))
    return env, vm, to_xml(vm.element())


@pytest.mark.parametrize("version", ["7.2.0", "7.4.0"])
def test_a_running_vm_moves_to_another_system_datastore_on_its_host(lab, version):
    vm_id = 90 if version == "7.2.0" else 91
    env, vm, xml = moving_on_its_host(lab, vm_id, version)
    res = f"one-vm-{vm_id}-disk-0"
    replicas = env.replicas(res)
    new_dir = f"{SYS2}/{vm_id}"
    ok(env.r.migrate("premigrate", "node1", "node1", new_dir, vm_id, SYSTEM2, xml))
    # the new directory is ready before the domain moves; the old one still serves the domain
    device = env.link("node1", disk_path(vm_id, 0))
    assert env.link("node1", f"{new_dir}/disk.0") == device
    assert env.lab.host("node1").run_inside(f"cat {new_dir}/deployment.0").stdout == b"<domain/>\n"
    assert env.rds()[res]["Aux/one/DS_ID"] == str(SYSTEM2)
    assert TWO_PRIMARIES not in env.rds()[res]         # one host: no second primary
    ok(env.r.migrate("postmigrate", "node1", "node1", new_dir, vm_id, SYSTEM2, xml))
    assert not exists(env, "node1", f"{SYS}/{vm_id}")
    assert env.replicas(res) == replicas                # still attached where the VM runs
    assert env.read("node1", f"{new_dir}/disk.0") == PATTERN
    # the disk's snapshot came along (DS_MIGRATE_SNAP): revert it from the new place
    env.lab.write_device("node1", f"{new_dir}/disk.0", b"\0" * 4096)
    vm.lcm_state = "DISK_SNAPSHOT_REVERT_POWEROFF"
    ok(env.r.tm("snap_revert", f"node1:{new_dir}/disk.0", 0, vm_id, SYSTEM2))
    assert env.read("node1", f"{new_dir}/disk.0") == PATTERN
    # and the VM's end removes it from the new datastore
    vm.lcm_state = "EPILOG"
    ok(env.r.tm("delete", f"node1:{new_dir}/disk.0", vm_id, SYSTEM2))
    assert res not in env.rds()


def test_a_failed_datastore_move_leaves_the_vm_as_it_was(lab):
    env, vm, xml = moving_on_its_host(lab, 92, "7.4.0")
    res = "one-vm-92-disk-0"
    replicas = env.replicas(res)
    new_dir = f"{SYS2}/92"
    ok(env.r.migrate("premigrate", "node1", "node1", new_dir, 92, SYSTEM2, xml))
    ok(env.r.migrate("failmigrate", "node1", "node1", new_dir, 92, SYSTEM2, xml))
    assert not exists(env, "node1", new_dir)
    assert env.rds()[res]["Aux/one/DS_ID"] == str(SYSTEM_DS)
    assert env.replicas(res) == replicas                # the running VM keeps its device
    assert env.read("node1", disk_path(92, 0)) == PATTERN
    assert exists(env, "node1", f"{SYS}/92/deployment.0")
    # twice (7.4 calls failmigrate after a premigrate that failed and undid itself)
    ok(env.r.migrate("failmigrate", "node1", "node1", new_dir, 92, SYSTEM2, xml))
    assert env.read("node1", disk_path(92, 0)) == PATTERN


def test_a_datastore_move_whose_copy_fails_undoes_itself(lab):
    env, vm, xml = moving_on_its_host(lab, 93, "7.2.0")
    res = "one-vm-93-disk-0"
    replicas = env.replicas(res)
    env.lab.fail_command("node1", "cp")
    try:
        result = env.r.migrate("premigrate", "node1", "node1", f"{SYS2}/93", 93, SYSTEM2, xml)
    finally:
        env.lab.clear_command_faults()
    assert not result.ok and "copy" in result.stderr, str(result)
    assert not exists(env, "node1", f"{SYS2}/93")
    assert env.rds()[res]["Aux/one/DS_ID"] == str(SYSTEM_DS)
    assert env.replicas(res) == replicas
    assert env.read("node1", disk_path(93, 0)) == PATTERN


def test_after_a_datastore_move_the_next_host_gets_the_paths_the_domain_names(lab):
    """The domain still names the first datastore's paths (no block disk path changes in a live
    move): a later migration to another host gives the destination those paths while QEMU opens
    them there, and takes them away after."""
    env, vm, xml = moving_on_its_host(lab, 94, "7.4.0")
    new_dir = f"{SYS2}/94"
    ok(env.r.migrate("premigrate", "node1", "node1", new_dir, 94, SYSTEM2, xml))
    ok(env.r.migrate("postmigrate", "node1", "node1", new_dir, 94, SYSTEM2, xml))
    vm.lcm_state = "MIGRATE"
    vm.history[-1].action = LIVE_MIGRATE
    vm.history.append(History("node2", SYSTEM2))
    xml = to_xml(vm.element())
    ok(env.r.migrate("premigrate", "node1", "node2", new_dir, 94, SYSTEM2, xml))
    device = env.link("node2", f"{new_dir}/disk.0")
    assert device and env.link("node2", disk_path(94, 0)) == device      # what the domain names
    assert env.lab.host("node2").run_inside(f"cat {new_dir}/deployment.0").stdout == b"<domain/>\n"
    ok(env.r.migrate("postmigrate", "node1", "node2", new_dir, 94, SYSTEM2, xml))
    assert not exists(env, "node2", f"{SYS}/94")
    assert not exists(env, "node1", new_dir)
    assert env.read("node2", f"{new_dir}/disk.0") == PATTERN
    assert env.rds()["one-vm-94-disk-0"]["Aux/one/DS_ID"] == str(SYSTEM2)
