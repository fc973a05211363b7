"""A fault at each LINSTOR call and each remote command of clone, mkimage, cpds and snap_revert:
the action fails with an error naming the step, and leaves exactly the state that existed before."""
from __future__ import annotations

import re

import pytest

from lab.lab import IMAGE_DS, SYSTEM_DS, Lab, LabConfig
from lab.oned import Disk, History, VM

from .conftest import PATTERN, SYS, Env, disk_path

MUTATING = ("POST", "PUT", "DELETE", "PATCH")


def linstor_state(env) -> dict:
    with env.lab.client() as c:
        rds = {rd.name: dict(rd.properties) for rd in c.resource_dfn_list_raise().resource_definitions}
        rscs = sorted((r.name, r.node_name, tuple(sorted(r.flags)), tuple(sorted(r.properties.items())))
                      for r in c.resource_list_raise().resources)
        snaps = sorted((s.rsc_name, s.snapshot_name) for s in c.snapshot_dfn_list_raise().snapshots)
    return {"rds": rds, "resources": rscs, "snapshots": snaps}


def host_state(env) -> dict:
    out = {}
    for name in env.lab.node_names:
        listing = env.lab.host(name).run_inside(
            "find /var/lib/one/datastores -mindepth 1 -printf '%p %l\\n' | sort", check=False)
        out[name] = listing.stdout.decode()
    return out


def state(env) -> dict:
    return {"linstor": linstor_state(env), "hosts": host_state(env)}


def mutating_calls(env, since: int) -> list[tuple[str, str]]:
    return [(r["method"], r["path"]) for r in env.lab.linstor.requests()[since:] if r["method"] in MUTATING]


@pytest.fixture(scope="module")
def fenv():
    with Lab(LabConfig(hosts=3, linstor_version="1.20.0")) as lab:     # an old server: revert copies
        # explicit nodes keep every run's calls the same (node1, the VM host, is always diskless)
        for ds in (IMAGE_DS, SYSTEM_DS):
            lab.oned.datastores[ds].template.update(RESOURCE_GROUP="", NODE_LIST="node2 node3", STORAGE_POOL="data")
        yield Env(lab)


def run_fault_matrix(env, prepare, action, commands: list[str], rename, host: str = "node1"):
    """prepare(i) sets up run i, action(i) runs it; rename(path, i) maps run 0's request paths to run i's."""
    # a clean run teaches which mutating calls the action makes
    prepare(0)
    mark = len(env.lab.linstor.requests())
    first = action(0)
    assert first.ok, str(first)
    calls = mutating_calls(env, mark)
    assert calls
    run = 1
    for index, (method, path) in enumerate(calls):
        prepare(run)
        shifted = rename(path, run)
        earlier = sum(1 for m, p in calls[:index] if (m, p) == (method, path))
        before = state(env)
        env.lab.linstor.add_fault(re.escape(shifted) + "$", "rc", method=method, skip=earlier,
                                  ret_code=-4611686018427387102, message=f"injected at call {index}")
        result = action(run)
        env.lab.linstor.clear_faults()
        if result.ok:
            # only a cleanup step may absorb a one-off refusal (it is retried); nothing may be left
            cleanup = method == "DELETE" or (method == "PUT" and re.search(r"/resources/[^/]+$", path))
            assert cleanup, f"call {index} ({method} {path}) failed but the action succeeded"
            after = linstor_state(env)
            assert not [n for n in after["rds"] if n.endswith("-tmp")]
            assert not [r for r in after["resources"] if "Aux/one/TEMPORARY" in dict(r[3])]
        else:
            assert f"injected at call {index}" in result.stderr, result.stderr
            assert state(env) == before, f"state changed after a fault at call {index}: {method} {path}"
        run += 1
    for command in commands:
        prepare(run)
        before = state(env)
        env.lab.fail_command(host, command)
        result = action(run)
        env.lab.clear_command_faults()
        assert result.rc != 0, f"{command} failed but the action succeeded"
        assert f"injected failure: {command}" in result.stderr and " on " in result.stderr, result.stderr
        assert state(env) == before, f"state changed after {command} failed"
        run += 1


def vm_rename(base):
    return lambda path, i: path.replace(f"-vm-{base}-", f"-vm-{base + i}-")


def test_clone_faults(fenv):
    env = fenv
    img = env.image(900, data=PATTERN)

    def prepare(i):
        env.vm(100 + i, [Disk(0, IMAGE_DS, image_id=900, source=img.source, size=32)])

    run_fault_matrix(env, prepare, lambda i: env.clone(img, 100 + i, 0), ["dd", "ln", "mkdir"], vm_rename(100))


def test_mkimage_faults(fenv):
    env = fenv

    def prepare(i):
        env.vm(200 + i, [Disk(0, SYSTEM_DS, type="fs", fs="ext4", size=16)])

    run_fault_matrix(env, prepare,
                     lambda i: env.r.tm("mkimage", 16, "raw", f"node1:{disk_path(200 + i, 0)}", 200 + i, SYSTEM_DS),
                     ["mkfs.ext4", "ln"], vm_rename(200))


def test_cpds_faults(fenv):
    """The copy through a host (LINSTOR's own copy is refused: the image datastore places on
    node2 only); a fault in LINSTOR's copy falls back to this path: tests/tm/test_cpds.py."""
    env = fenv
    template = env.lab.oned.datastores[IMAGE_DS].template
    template["NODE_LIST"] = "node2"
    try:
        cpds_fault_matrix(env)
    finally:
        template["NODE_LIST"] = "node2 node3"


def cpds_fault_matrix(env):
    img = env.image(901, data=PATTERN)
    env.vm(300, [Disk(0, IMAGE_DS, image_id=901, source=img.source, size=32)], lcm="LCM_INIT", state="POWEROFF")
    assert env.clone(img, 300, 0).ok
    with env.lab.client() as c:
        c.snapshot_create(None, "one-vm-300-disk-0", "snapshot-0")

    def prepare(i):
        pass

    def action(i):
        env.save_as_target(950 + i)
        snap = -1 if i % 2 else 0
        return env.r.tm("cpds", f"node1:{disk_path(300, 0)}", f"/dev/drbd/by-res/one-image-{950 + i}/0",
                        snap, 300, IMAGE_DS)

    # run 0 (the learning run) copies snapshot 0; its calls are then failed one by one
    run_fault_matrix(env, prepare, lambda i: action(0 if i == 0 else i * 2),
                     ["dd"], lambda path, i: path.replace("one-image-950", f"one-image-{950 + i * 2}"))


def test_snap_revert_faults(fenv):
    env = fenv
    img = env.image(902, data=PATTERN)

    def prepare(i):
        vm = 400 + i
        env.vm(vm, [Disk(0, IMAGE_DS, image_id=902, source=img.source, size=32)], lcm="LCM_INIT", state="POWEROFF")
        assert env.clone(img, vm, 0).ok
        assert env.r.tm("snap_create", f"node1:{disk_path(vm, 0)}", 0, vm, IMAGE_DS).ok
        assert env.r.tm("snap_create", f"node1:{disk_path(vm, 0)}", 1, vm, IMAGE_DS).ok
        env.lab.write_device("node1", disk_path(vm, 0), b"N" * 4096)

    def action(i):
        # snapshot 0 is not the newest: on this (old) server the revert goes through a copy
        return env.r.tm("snap_revert", f"node1:{disk_path(400 + i, 0)}", 0, 400 + i, IMAGE_DS)

    run_fault_matrix(env, prepare, action, ["dd"], vm_rename(400))
    # the learning run did revert
    assert env.read("node1", disk_path(400, 0)) == PATTERN
