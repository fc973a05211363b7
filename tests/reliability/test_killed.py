"""SIGKILL at points of clone, mkimage, DS cp, snap_revert and cpds, then the same action again (as
`onevm recover --retry` re-runs a transfer, or oned an import after the image is deleted and
re-created): the second run converges to the state a clean run gives, reusing or removing what the
killed run left."""
from __future__ import annotations

import re
import time

import pytest

from lab.lab import IMAGE_DS, SYSTEM_DS, Lab, LabConfig
from lab.oned import Disk, Image, to_xml
from lab.runner import ds_action_data

from tests.tm.conftest import PATTERN, Env, disk_path

from .conftest import NO_LEFTOVERS, deterministic, image_file, leftovers


@pytest.fixture(scope="module")
def kenv():
    with Lab(LabConfig(hosts=3, linstor_version="1.20.0")) as lab:   # an old server: revert copies bytes
        deterministic(lab)
        yield Env(lab)


def when_request(env, method: str, path_re: str, after: float = 0.0):
    """A kill_when predicate: true once the controller received a matching request (plus `after` s)."""
    seen: dict = {}

    def check() -> bool:
        if "at" not in seen and any(r["method"] == method and re.search(path_re, r["path"])
                                    for r in env.lab.linstor.requests()):
            seen["at"] = time.monotonic()
        return "at" in seen and time.monotonic() - seen["at"] >= after
    return check


def when_running(env, host: str, marker: str):
    """True once the shim of a hung remote command on host has started (it touches marker)."""
    path = env.lab.host(host).path("/var/tmp/one") / marker
    return lambda: path.exists()


def hang_command(env, host: str, command: str, marker: str) -> None:
    """The remote `command` on host hangs (a shim that marks its start and sleeps)."""
    shim = env.lab.host(host).path("/usr/local/bin") / command
    shim.write_text(f"#!/bin/sh\nmkdir -p /var/tmp/one; touch /var/tmp/one/{marker}\nexec sleep 3600\n")
    shim.chmod(0o755)


def arm(env, kind: str, host: str, marker: str, method: str = "POST", path: str = r"/resources$"):
    """Set up one kill point; returns its kill_when predicate. kind: a LINSTOR fault ("hang": the
    request never reaches the controller's logic; "delay_after": applied, the reply withheld), or
    the name of a host command that hangs on `host`."""
    if kind in ("hang", "delay_after"):
        env.lab.linstor.add_fault(path, kind, method=method, seconds=3600 if kind == "hang" else 30)
        return when_request(env, method, path, after=0.3 if kind == "delay_after" else 0.0)
    hang_command(env, host, kind, marker)
    return when_running(env, host, marker)


def unhang(env) -> None:
    env.lab.linstor.clear_faults()
    env.lab.clear_command_faults()
    for host in env.lab.node_names:
        for shim in env.lab.host(host).path("/usr/local/bin").iterdir():
            if shim.read_text(errors="replace").find("exec sleep 3600") >= 0:
                shim.unlink()
        env.lab.host(host).run_inside("pkill -f 'sleep 3600'", check=False)


def killed_then_rerun(env, sc, run, kill_when, check) -> None:
    sc.run()
    env.lab.linstor.clear_requests()
    killed = run(kill_when)
    unhang(env)
    assert killed.rc == -9, f"the action ended before the kill point:\n{killed}"
    again = run(None)
    assert again.ok, f"the re-run after the kill did not converge:\n{again}"
    check()
    assert leftovers(env) == NO_LEFTOVERS


def killed_clones(env, sc, img, points, first_vm: int) -> None:
    """TM clone of `img` for a new VM per kill point, killed there, then run again."""
    for i, (kind, method, path) in enumerate(points):
        vm = first_vm + i
        env.vm(vm, [Disk(0, IMAGE_DS, image_id=img.id, source=img.source, size=32)])
        kill = arm(env, kind, "node1", f"clone-{vm}", method, path)

        def check(vm=vm):
            assert env.read("node1", disk_path(vm, 0)) == PATTERN
            assert env.rds()[f"one-vm-{vm}-disk-0"].get("Aux/one/VM_ID") == str(vm)
        killed_then_rerun(env, sc, lambda k, vm=vm: env.r.tm(
            "clone", f"one-frontend:{img.source}", f"node1:{disk_path(vm, 0)}", vm, IMAGE_DS, kill_when=k),
            kill, check)


def test_killed_clone_mkimage_cp_snap_revert_then_rerun(kenv, scenario):
    env = kenv
    sc = scenario("SIGKILL at 10 points (clone x4, mkimage x2, DS cp x2, snap_revert x2), then re-run",
                  "the re-run succeeds: bytes right, one volume with the right properties, no temporary "
                  "resource, mark or safety snapshot left")
    img = env.image(200, data=PATTERN, nodes=["node2", "node3"])

    # ---- clone (copy mode): 4 points of the copy through the host (LINSTOR before 1.32 cannot mark
    # a clone as it makes it: the copy goes through the host; LINSTOR's own: below) ---------------------
    system = env.lab.oned.datastores[SYSTEM_DS].template
    points = [("hang", "POST", r"/resource-definitions$"),                     # creating the volume
              ("delay_after", "POST", r"-disk-0/resources$"),                 # placed, no reply
              ("dd", None, None),                                              # in the middle of the copy
              ("hang", "PUT", r"/resource-definitions/one-vm-\d+-disk-0$")]    # marking it complete
    system["NODE_LIST"] = "node1"                   # the VM disk on node1 only, as before 1.32 changed it
    killed_clones(env, sc, img, points, first_vm=2010)
    system["NODE_LIST"] = "node2 node3"

    # ---- mkimage: 2 points ----------------------------------------------------------------------------
    for i, kind in enumerate(("delay_after", "ln")):
        vm = 2020 + i
        env.vm(vm, [Disk(0, SYSTEM_DS, size=16)])
        kill = arm(env, kind, "node1", f"ln-{vm}")

        def check(vm=vm):
            out = env.lab.host("node1").run_inside(f"blockdev --getsize64 {disk_path(vm, 0)}")
            assert int(out.stdout) >= 16 << 20
            assert env.rds()[f"one-vm-{vm}-disk-0"].get("Aux/one/VM_ID") == str(vm)
        killed_then_rerun(env, sc, lambda k, vm=vm: env.r.tm(
            "mkimage", 16, "raw", f"node1:{disk_path(vm, 0)}", vm, SYSTEM_DS, kill_when=k), kill, check)

    # ---- DS cp: 2 points ---------------------------------------------------------------------------------
    src = image_file(env, "kill-images", 16, PATTERN)
    env.lab.oned.datastores[IMAGE_DS].template["BRIDGE_LIST"] = "node2"
    for i, kind in enumerate(("delay_after", "dd")):
        image_id = 2030 + i
        kill = arm(env, kind, "node2", f"cp-{image_id}")
        data = ds_action_data(to_xml(Image(image_id, "a", IMAGE_DS, path=str(src), size=16).element()),
                              to_xml(env.lab.oned.datastores[IMAGE_DS].element()))

        def check(image_id=image_id):
            res = f"one-image-{image_id}"
            assert res in env.rds()
            assert env.read("node2", f"/dev/drbd/by-res/{res}/0") == PATTERN
        killed_then_rerun(env, sc, lambda k, d=data, i=image_id: env.r.ds("cp", d, i, kill_when=k), kill, check)

    # ---- snap_revert (old server: through <res>-tmp and a copy): 2 points ----------------------------
    vm = 2040
    env.vm(vm, [Disk(0, IMAGE_DS, image_id=200, source=img.source, size=32)], lcm="RUNNING")
    assert env.clone(img, vm, 0).ok
    path = disk_path(vm, 0)
    assert env.r.tm("snap_create", f"node1:{path}", 0, vm, IMAGE_DS).ok
    env.lab.write_device("node1", path, b"A" * 4096)
    assert env.r.tm("snap_create", f"node1:{path}", 1, vm, IMAGE_DS).ok     # snapshot 0 is no longer the newest
    vmo = env.lab.oned.vms[vm]
    vmo.lcm_state, vmo.state = "DISK_SNAPSHOT_REVERT_POWEROFF", "POWEROFF"
    vmo.disks[0].snapshots = [{"id": 0}, {"id": 1, "active": True}]
    env.lab.oned.add(vmo)
    for kind in ("hang", "dd"):
        env.lab.write_device("node1", path, b"B" * 4096)          # the guest wrote after both snapshots
        kill = arm(env, kind, "node1", f"revert-{vm}", path=r"/snapshot-restore-resource/")

        def check():
            assert env.read("node1", path) == PATTERN              # snapshot 0's bytes
            assert env.read("node1", path, 8 << 20) == b"\0" * 4096
        killed_then_rerun(env, sc, lambda k: env.r.tm("snap_revert", f"node1:{path}", 0, vm, IMAGE_DS,
                                                      kill_when=k), kill, check)

    assert sc.runs == 10


def test_killed_ds_clone_on_an_old_controller_then_rerun(kenv, scenario):
    """DS clone before LINSTOR 1.32: the new image's volume is made marked and the bytes go through
    a bridge; killed in the middle of that copy, the re-run replaces the unfinished volume."""
    env = kenv
    sc = scenario("SIGKILL in DS clone's copy through a bridge (LINSTOR before 1.32), then re-run",
                  "the re-run succeeds: the clone's bytes right, marked for the new image, nothing left over")
    src = env.image(220, data=PATTERN, nodes=["node2", "node3"])
    env.lab.oned.datastores[IMAGE_DS].template["BRIDGE_LIST"] = "node2"
    kill = arm(env, "dd", "node2", "dsclone-221")
    data = ds_action_data(to_xml(Image(221, "c", IMAGE_DS, path=src.source, size=32, cloning_id=220).element()),
                          to_xml(env.lab.oned.datastores[IMAGE_DS].element()))

    def check():
        props = env.rds()["one-image-221"]
        assert props["Aux/one/linstor_un/MADE_FOR"].startswith("image 221 ")
        assert "Aux/one/linstor_un/BUILDING" not in props
        assert env.read("node2", "/dev/drbd/by-res/one-image-221/0") == PATTERN
        assert env.read("node2", "/dev/drbd/by-res/one-image-221/0", 1 << 20) == PATTERN
    killed_then_rerun(env, sc, lambda k: env.r.ds("clone", data, 221, kill_when=k), kill, check)
    assert sc.runs == 1


def test_killed_linstors_own_copies_then_rerun(renv, scenario):
    """LINSTOR's own copies (a current controller: a clone is born with its marks): TM clone's
    resource-definition clone, cpds' snapshot restore into DS mkfs's volume."""
    env = renv
    sc = scenario("SIGKILL at 4 points of LINSTOR's own copies (clone x2, cpds x2), then re-run",
                  "the re-run succeeds: bytes right, one volume with the right properties, no temporary "
                  "resource, mark or safety snapshot left")
    img = env.image(210, data=PATTERN, nodes=["node2", "node3"])
    killed_clones(env, sc, img, [("delay_after", "POST", r"/resource-definitions/one-image-210/clone$"),  # no reply
                                 ("hang", "PUT", r"/resource-definitions/one-vm-\d+-disk-0$")],  # marking it
                  first_vm=2110)

    vm = 2120
    env.vm(vm, [Disk(0, IMAGE_DS, image_id=210, source=img.source, size=32)], lcm="LCM_INIT", state="POWEROFF")
    assert env.clone(img, vm, 0).ok
    path = disk_path(vm, 0)
    assert env.r.tm("snap_create", f"node1:{path}", 0, vm, IMAGE_DS).ok
    env.lab.write_device("node1", path, b"A" * 4096)                # after the snapshot

    # ---- cpds of snapshot 0 (LINSTOR's snapshot restore into DS mkfs's volume): 2 points ---------
    for i, (kind, method, where) in enumerate([("delay_after", "POST", r"/snapshot-restore-resource/snapshot-0$"),
                                               ("hang", "PUT", r"/resource-definitions/one-image-215\d$")]):
        target = env.save_as_volume(2150 + i, 32)
        kill = arm(env, kind, "node1", f"cpds-{i}", method, where)

        def check(res=f"one-image-{2150 + i}"):
            props = env.rds()[res]
            assert props["Aux/one/linstor_un/MADE_FOR"].startswith(f"image {res[10:]} born ")
            assert "Aux/one/linstor_un/BUILDING" not in props and "Aux/one/VM_ID" not in props
            with env.lab.client() as c:
                c.resource_make_available("node1", res)
            assert env.read("node1", f"/dev/drbd/by-res/{res}/0") == PATTERN
        killed_then_rerun(env, sc, lambda k, t=target: env.r.tm("cpds", f"node1:{path}", t.source, 0, vm, IMAGE_DS,
                                                                kill_when=k), kill, check)
    assert sc.runs == 4
