"""60 mixed actions over three hosts, 15 at a time (oned's -t 15), against the same 60 run one by
one in a second lab: the end states must be equal, with no leaked diskless replica, temporary
resource, mark or lock."""
from __future__ import annotations

import concurrent.futures
import os

from lab.lab import FRONTEND, IMAGE_DS, SYSTEM_DS, Lab, LabConfig
from lab.oned import Disk, Image, to_xml
from lab.runner import ds_action_data

from tests.tm.conftest import PATTERN, Env, disk_path

from .conftest import NO_LEFTOVERS, deterministic, image_file, leftovers, linstor_state, state

HOSTS = ["node1", "node2", "node3"]


def workload(env) -> list[list]:
    """Chains of steps (callables returning a Result); steps of a chain run in order."""
    img = env.image(600, data=PATTERN, nodes=["node2", "node3"])
    src = image_file(env, "stress-images", 4, PATTERN)
    chains = []
    for i in range(12):
        vm, host, other = 610 + i, HOSTS[i % 3], HOSTS[(i + 1) % 3]
        env.vm(vm, [Disk(0, IMAGE_DS, image_id=600, source=img.source, size=32)], host=host, lcm="RUNNING")
        path = f"{host}:{disk_path(vm, 0)}"
        clone = (lambda vm=vm, host=host: env.clone(img, vm, 0, host=host))
        snap = (lambda vm=vm, path=path, n=0: env.r.tm("snap_create", path, n, vm, IMAGE_DS))
        if i % 2 == 0:        # lives on: cloned, snapshotted twice, migrated live to the next host
            xml = lambda vm=vm: to_xml(env.lab.oned.vms[vm].element())
            vmdir = f"/var/lib/one//datastores/{SYSTEM_DS}/{vm}"
            chains.append([clone, snap,
                           lambda vm=vm, h=host, o=other, d=vmdir: env.r.migrate("premigrate", h, o, d, vm,
                                                                                  SYSTEM_DS, xml(vm)),
                           lambda vm=vm, h=host, o=other, d=vmdir: env.r.migrate("postmigrate", h, o, d, vm,
                                                                                  SYSTEM_DS, xml(vm))])
        else:                 # terminated: cloned, snapshot made and dropped, deleted
            chains.append([clone, snap,
                           lambda vm=vm, path=path: env.r.tm("snap_delete", path, 0, vm, IMAGE_DS),
                           lambda vm=vm, path=path: env.r.tm("delete", path, vm, IMAGE_DS)])
    for i in range(12):       # imports
        data = ds_action_data(to_xml(Image(650 + i, "a", IMAGE_DS, path=str(src), size=4).element()),
                              to_xml(env.lab.oned.datastores[IMAGE_DS].element()))
        chains.append([lambda d=data, i=i: env.r.ds("cp", d, 650 + i)])
    return chains


def end_state(env) -> dict:
    s = linstor_state(env)
    s["rds"] = {n: sorted(p.items()) for n, p in s["rds"].items()}
    s["snapshots"] = sorted(x for x in s["snapshots"])
    s.pop("resources")            # diskless replicas are compared below, as what VMs need
    return {"linstor": s, "hosts": state(env)["hosts"],
            "diskless": sorted((r[0], r[1]) for r in linstor_state(env)["resources"] if "DISKLESS" in r[2]
                               and "TIE_BREAKER" not in r[2])}


def run_lab(concurrent: bool) -> tuple[dict, list]:
    with Lab(LabConfig(hosts=3)) as lab:
        deterministic(lab)
        env = Env(lab)
        chains = workload(env)
        failures = []
        probe_lock_check(lab)

        def run_chain(chain):
            for step in chain:
                r = step()
                if not r.ok:
                    failures.append(str(r))
                    return
        if concurrent:
            with concurrent_pool() as pool:
                list(pool.map(run_chain, chains))
        else:
            for chain in chains:
                run_chain(chain)
        assert leftovers(env) == NO_LEFTOVERS
        return end_state(env), failures + [f"lock still held: {p}" for p in held_locks(lab)]


def probe_lock_check(lab) -> None:
    """The held-lock check must see a lock that is held (or it would prove nothing)."""
    import fcntl
    locks = lab.one_location / "var" / "lock" / "one"
    locks.mkdir(parents=True, exist_ok=True)
    with open(locks / "linstor_un-probe.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_SH)
        assert held_locks(lab) == [str(locks / "linstor_un-probe.lock")]
    assert held_locks(lab) == []


def held_locks(lab) -> list[str]:
    """The driver's lock files (never deleted, by design) that some process still holds (/proc/locks)."""
    locks = lab.one_location / "var" / "lock" / "one"
    files = {os.stat(p).st_ino: str(p) for p in locks.glob("linstor_un-*.lock")} if locks.exists() else {}
    held = []
    for line in open("/proc/locks"):
        parts = line.split()
        dev_inode = parts[5] if parts[1] != "->" else parts[6]
        inode = int(dev_inode.split(":")[-1])
        if inode in files:
            held.append(files[inode])
    return held


def concurrent_pool():
    return concurrent.futures.ThreadPoolExecutor(15)


def test_sixty_mixed_actions_fifteen_at_a_time(scenario):
    sc = scenario("stress: 60 mixed actions (clones, snapshots, live migrations, deletes, imports) on 3 hosts, "
                  "15 at a time",
                  "every action succeeds; end state (LINSTOR, host files, diskless replicas) equals a one-by-one "
                  "run's; no temporary resource, mark or held lock")
    sc.run()
    one_by_one, failed = run_lab(concurrent=False)
    assert one_by_one["linstor"]["rds"], "the workload left nothing to compare"
    assert not failed, failed
    sc.run()
    at_once, failed = run_lab(concurrent=True)
    assert not failed, "\n".join(failed)
    assert at_once == one_by_one
