"""The LINSTOR controller fails: down, hanging, losing replies, restarting in the middle of an action."""
from __future__ import annotations

import re
import socket
import threading
import time
from contextlib import contextmanager

from lab.lab import IMAGE_DS, SYSTEM_DS
from lab.oned import Disk, Image, to_xml
from lab.runner import ds_action_data

from tests.tm.conftest import PATTERN, disk_path
from tests.tm.test_faults import MUTATING

from .conftest import NO_LEFTOVERS, image_file, leftovers, linstor_state, state


def set_controllers(env, value: str) -> None:
    for ds in (IMAGE_DS, SYSTEM_DS):
        env.lab.oned.datastores[ds].template["LS_CONTROLLERS"] = value


def dead_port() -> int:
    with socket.socket() as s:                 # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def hanging_controller():
    """A TCP port that accepts connections and never answers."""
    hang = socket.socket()
    hang.bind(("127.0.0.1", 0))
    hang.listen(64)
    held, stop = [], threading.Event()

    def accept():
        hang.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(hang.accept()[0])
            except OSError:
                pass

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield f"127.0.0.1:{hang.getsockname()[1]}"
    finally:
        stop.set()
        hang.close()
        for s in held:
            s.close()


def clone_through(env, img, vm: int, controllers: str):
    """Clone img for a new VM with LS_CONTROLLERS set to `controllers`: (result, seconds)."""
    env.vm(vm, [Disk(0, IMAGE_DS, image_id=img.id, source=img.source, size=32)])
    set_controllers(env, controllers)
    start = time.monotonic()
    try:
        return env.clone(img, vm, 0), time.monotonic() - start
    finally:
        set_controllers(env, env.lab.linstor.url)


def test_first_controller_down_or_hanging_fails_over(renv, scenario):
    env = renv
    sc = scenario("controller failover: first of LS_CONTROLLERS down or hanging",
                  "clone succeeds through the next controller, bytes right; down < 5 s, hanging < 20 s")
    img = env.image(100, data=PATTERN, nodes=["node2", "node3"])
    with hanging_controller() as hung:
        for vm, first, bound in ((101, f"127.0.0.1:{dead_port()}", 5), (102, hung, 20)):
            sc.run()
            result, took = clone_through(env, img, vm, f"{first},{env.lab.linstor.url}")
            assert result.ok, str(result)
            assert took < bound, f"{first}: {took:.1f}s"
            assert env.read("node1", disk_path(vm, 0)) == PATTERN


def test_all_controllers_down_or_hanging_is_a_clear_error_in_bounded_time(renv, scenario):
    env = renv
    sc = scenario("controller outage: every controller down, or every one hanging",
                  "one-line error naming the controllers within 30 s; nothing created in LINSTOR or on hosts")
    img = env.image(103, data=PATTERN, nodes=["node2", "node3"])
    with hanging_controller() as hung1, hanging_controller() as hung2:
        for vm, controllers in ((104, f"127.0.0.1:{dead_port()},127.0.0.1:{dead_port()}"),
                                (105, f"{hung1},{hung2}")):
            sc.run()
            before = state(env)
            result, took = clone_through(env, img, vm, controllers)
            assert result.rc != 0 and "cannot reach any LINSTOR controller" in result.stderr
            assert len(result.stderr.strip().splitlines()) == 1, result.stderr
            assert took < 30, f"{controllers}: {took:.1f}s"
            assert state(env) == before


def shape(env, vm_id: int) -> dict:
    """The LINSTOR state of one VM's volumes, its id replaced: comparable between runs."""
    s = linstor_state(env)
    mark = f"-vm-{vm_id}-"

    def norm(text):
        text = str(text).replace(mark, "-vm-N-").replace(f"'{vm_id}'", "'N'")
        return re.sub(rf"\bvm {vm_id} born [0-9]+", "vm N born T", text)      # ownership marks
    return {"rds": {norm(n): norm(sorted(p.items())) for n, p in s["rds"].items() if mark in n},
            "resources": sorted(norm(r) for r in s["resources"] if mark in r[0]),
            "snapshots": sorted(norm(x) for x in s["snapshots"] if mark in x[0] or mark in x[1])}


def lost_reply_matrix(env, sc, prepare, action, rename, base: int) -> dict:
    """Every mutating call of the action in turn is applied by the controller, whose reply is then
    lost (the connection drops). The run must end as a clean run does, or fail leaving nothing."""
    prepare(base)
    env.lab.linstor.clear_requests()
    clean = action(base)
    assert clean.ok, str(clean)
    expected = shape(env, base)
    calls = [(r["method"], r["path"]) for r in env.lab.linstor.requests() if r["method"] in MUTATING]
    outcomes = {"completed": 0, "failed cleanly": 0}
    for index, (method, path) in enumerate(calls):
        run = base + 1 + index
        sc.run()
        prepare(run)
        before = state(env)
        earlier = sum(1 for m, p in calls[:index] if (m, p) == (method, path))
        env.lab.linstor.add_fault(re.escape(rename(path, base, run)) + "$", "drop_after", method=method,
                                  skip=earlier)
        result = action(run)
        env.lab.linstor.clear_faults()
        sc.outcome("completed" if result.ok else "failed cleanly")
        if result.ok:
            outcomes["completed"] += 1
            assert shape(env, run) == expected, \
                f"lost reply of call {index} ({method} {path}): the end state differs from a clean run"
        else:
            outcomes["failed cleanly"] += 1
            assert state(env) == before, f"lost reply of call {index} ({method} {path}) left something"
        assert leftovers(env) == NO_LEFTOVERS
    return outcomes


def test_lost_replies_on_creates(renv, scenario):
    env = renv
    sc = scenario("lost replies: each create/change applied, then the reply lost (clone, mkimage)",
                  "the run completes with the same LINSTOR state as a clean run (no duplicate, no orphan), "
                  "or fails and leaves exactly the state before")
    img = env.image(110, data=PATTERN, nodes=["node2", "node3"])

    def prep_clone(vm):
        env.vm(vm, [Disk(0, IMAGE_DS, image_id=110, source=img.source, size=32)])

    def rename(path, base, run):
        return path.replace(f"-vm-{base}-", f"-vm-{run}-")

    outcomes = lost_reply_matrix(env, sc, prep_clone, lambda vm: env.clone(img, vm, 0), rename, 1100)

    def prep_mk(vm):
        env.vm(vm, [Disk(0, SYSTEM_DS, size=16)])

    def mkimage(vm):
        return env.r.tm("mkimage", 16, "raw", f"node1:{disk_path(vm, 0)}", vm, SYSTEM_DS)

    more = lost_reply_matrix(env, sc, prep_mk, mkimage, rename, 1200)
    assert sum(outcomes.values()) + sum(more.values()) == sc.runs


def test_controller_restart_in_the_middle_of_clone_and_cpds(renv, scenario):
    env = renv
    sc = scenario("controller restart in the middle of clone and cpds",
                  "the action waits for the controller (up to 30 s) and completes: bytes right, "
                  "nothing left over")
    img = env.image(120, data=PATTERN, nodes=["node2", "node3"])

    sc.run()
    env.vm(121, [Disk(0, IMAGE_DS, image_id=120, source=img.source, size=32)])
    env.lab.linstor.clear_requests()
    result = restart_during(env, r"one-vm-121-disk-0/resources/node1/make-available$", "POST",
                            lambda: env.clone(img, 121, 0))
    assert result.ok, str(result)
    assert env.read("node1", disk_path(121, 0)) == PATTERN
    assert leftovers(env) == NO_LEFTOVERS

    # cpds of that (powered-off) disk into a new image, the controller restarting at the image's
    # creation (LINSTOR's clone of the disk: the image datastore places it on the disk's nodes)
    sc.run()
    vm = env.lab.oned.vms[121]
    vm.lcm_state, vm.state = "HOTPLUG_SAVEAS_POWEROFF", "POWEROFF"
    env.lab.oned.add(vm)
    env.save_as_target(122)
    env.lab.linstor.clear_requests()
    result = restart_during(env, r"/resource-definitions$|/spawn$|/clone$", "POST",
                            lambda: env.r.tm("cpds", f"node1:{disk_path(121, 0)}", "/dev/drbd/by-res/one-image-122/0",
                                             -1, 121, IMAGE_DS))
    assert result.ok, str(result)
    with env.lab.client() as c:
        c.resource_make_available("node1", "one-image-122")
    assert env.read("node1", "/dev/drbd/by-res/one-image-122/0") == PATTERN
    assert leftovers(env) == NO_LEFTOVERS


def restart_during(env, path_re: str, method: str, run):
    """Run `run()`; when the controller receives a matching request (held 2 s there), restart it."""
    env.lab.linstor.add_fault(path_re, "delay", method=method, seconds=2)
    done = {}
    t = threading.Thread(target=lambda: done.setdefault("result", run()))
    t.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(
            re.search(path_re, r["path"]) for r in env.lab.linstor.requests() if r["method"] == method):
        time.sleep(0.05)
    time.sleep(0.5)
    env.lab.linstor.restart()
    t.join(180)
    env.lab.linstor.clear_faults()
    result = done["result"]
    assert "lost the controller's reply" in result.stderr, f"the restart did not hit the action:\n{result}"
    return result


def test_controller_restart_in_the_middle_of_save(scenario):
    from tests.vmm.test_save_restore import data, state as domain_state, vm_with_disk
    from tests.tm.conftest import Env
    from lab.lab import Lab, LabConfig
    sc = scenario("controller restart in the middle of VMM save (checkpoint volume being attached)",
                  "save completes: domain stopped, checkpoint volume holds it; restore brings the domain back "
                  "running; the checkpoint volume is gone afterwards; nothing left over")
    with Lab(LabConfig(hosts=2, libvirt=True)) as lab:
        env = Env(lab)
        vm = vm_with_disk(env, 140)
        ckpt = f"/var/lib/one//datastores/{SYSTEM_DS}/140/checkpoint"
        sc.run()
        lab.linstor.clear_requests()
        # the checkpoint volume is placed on the host (PREFER_NODE): attaching it is the listing
        # that finds its replica there
        result = restart_during(env, r"^/v1/view/resources$", "GET",
                                lambda: env.r.save("one-140", ckpt, "node1", 140, data(env, vm, "node1")))
        assert result.ok, str(result)
        assert domain_state(env, "node1", 140) == "absent"
        assert "one-vm-140-checkpoint" in env.rds()
        assert env.r.restore(ckpt, "node1", "one-140", 140, data(env, vm, "node1")).ok
        assert domain_state(env, "node1", 140) == "running"
        assert "one-vm-140-checkpoint" not in env.rds()
        assert leftovers(env) == NO_LEFTOVERS
        lab.host("node1").run_inside("virsh -c qemu:///system destroy one-140")


def test_ds_cp_survives_a_lost_reply_on_spawn(renv, scenario):
    env = renv
    sc = scenario("lost reply on DS cp's volume creation",
                  "the import completes once, bytes right, one resource definition")
    src = image_file(env, "rel-images", 8, PATTERN)
    sc.run()
    env.lab.linstor.add_fault(r"/spawn$|/autoplace$|/resource-definitions$", "drop_after", method="POST")
    data = ds_action_data(to_xml(Image(130, "a", IMAGE_DS, path=str(src), size=8).element()),
                          to_xml(env.lab.oned.datastores[IMAGE_DS].element()))
    result = env.r.ds("cp", data, 130)
    env.lab.linstor.clear_faults()
    sc.outcome("completed" if result.ok else "failed cleanly")
    if result.ok:
        assert result.stdout.split()[0] == "/dev/drbd/by-res/one-image-130/0"
        with env.lab.client() as c:
            c.resource_make_available("node1", "one-image-130")
        assert env.read("node1", "/dev/drbd/by-res/one-image-130/0") == PATTERN
    else:
        assert "one-image-130" not in env.rds()
    assert leftovers(env) == NO_LEFTOVERS
