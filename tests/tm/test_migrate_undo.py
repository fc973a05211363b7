"""A premigrate that fails undoes itself: oned calls no failmigrate when premigrate fails
(one_vmm_exec.rb), so whatever it did on the destination - the disk attached there, the second
primary allowed, the links, the VM directory - must not stay. One run per step it can fail at."""
from __future__ import annotations

import pytest

from lab.lab import IMAGE_DS, SYSTEM_DS
from lab.oned import Disk, to_xml

from .conftest import PATTERN, SYS, disk_path

TWO_PRIMARIES = "DrbdOptions/Net/allow-two-primaries"


def running_vm(env, vm_id: int):
    img = env.image(vm_id, data=PATTERN, nodes=["node1", "node2"])
    vm = env.vm(vm_id, [Disk(0, IMAGE_DS, image_id=vm_id, source=img.source, size=32)], lcm="RUNNING")
    assert env.clone(img, vm_id, 0).ok
    res = f"one-vm-{vm_id}-disk-0"
    assert not attached(env, res, "node3")           # the destination has nothing of it yet
    vm.lcm_state = "MIGRATE"
    return vm, res


def attached(env, res: str, node: str) -> bool:
    """A replica there a VM could use (LINSTOR's own tie-breaker, which it may leave or make when
    an attachment goes, is not one)."""
    return "TIE_BREAKER" not in env.replicas(res).get(node, ["TIE_BREAKER"])


def arm(env, point: str):
    if point == "attach":
        env.lab.linstor.add_fault(r"/resources/node3/make-available$", "rc", method="POST",
                                  ret_code=-4611686018427387000, message="Injected: satellite refused")
    elif point == "properties":
        env.lab.linstor.add_fault(r"/resource-definitions/one-vm-\d+-disk-0$", "rc", method="PUT",
                                  ret_code=-4611686018427387000, message="Injected: controller refused")
    else:                                           # a command on the destination
        env.lab.fail_command("node3", point)


@pytest.mark.parametrize("point", ["attach", "properties", "ln", "tar"])
def test_a_failed_premigrate_leaves_nothing_on_the_destination(env, point):
    vm_id = {"attach": 81, "properties": 82, "ln": 83, "tar": 84}[point]
    vm, res = running_vm(env, vm_id)
    xml = to_xml(vm.element())
    arm(env, point)
    try:
        result = env.r.migrate("premigrate", "node1", "node3", f"{SYS}/{vm_id}", vm_id, SYSTEM_DS, xml)
    finally:
        env.lab.linstor.clear_faults()
        env.lab.clear_command_faults()
    assert not result.ok, str(result)
    assert TWO_PRIMARIES not in env.rds()[res]
    assert not attached(env, res, "node3")
    assert env.lab.host("node3").run_inside(f"test -e {SYS}/{vm_id}", check=False).returncode != 0
    assert env.read("node1", disk_path(vm_id, 0)) == PATTERN          # the source as it was
    # and the migration can be tried again
    assert env.r.migrate("premigrate", "node1", "node3", f"{SYS}/{vm_id}", vm_id, SYSTEM_DS, xml).ok
    assert env.read("node3", disk_path(vm_id, 0)) == PATTERN
    assert env.r.migrate("failmigrate", "node1", "node3", f"{SYS}/{vm_id}", vm_id, SYSTEM_DS, xml).ok


def test_a_premigrate_stopped_by_sigterm_undoes_itself(env):
    vm, res = running_vm(env, 85)
    xml = to_xml(vm.element())
    shim = env.lab.host("node3").path("/usr/local/bin") / "tar"       # the copy of the VM directory hangs
    shim.write_text("#!/bin/sh\nmkdir -p /var/tmp/one; touch /var/tmp/one/tar-85\nexec sleep 3600\n")
    shim.chmod(0o755)
    marker = env.lab.host("node3").path("/var/tmp/one") / "tar-85"
    try:
        result = env.r.migrate("premigrate", "node1", "node3", f"{SYS}/85", 85, SYSTEM_DS, xml,
                               kill_when=marker.exists, kill_signal=15)
    finally:
        env.lab.clear_command_faults()
        env.lab.host("node3").run_inside("pkill -f 'sleep 3600' || true", check=False)
    assert result.rc != 0 and "terminated" in result.stderr, str(result)
    assert TWO_PRIMARIES not in env.rds()[res]
    assert not attached(env, res, "node3")
    assert env.lab.host("node3").run_inside(f"test -e {SYS}/85", check=False).returncode != 0
