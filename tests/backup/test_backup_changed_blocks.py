"""Increments that read only what changed: on an LVM_THIN pool the driver asks thin_delta which
chunks differ between the base snapshot and the new one (the lab's thin pool stand-in,
lab/thin_standin.py, gives it real thin-pool metadata) and reads only those; every chain restores
byte for byte; where the pool cannot say, the whole snapshot is read, and the VM log says why."""
from __future__ import annotations

import re

import pytest

from lab.lab import IMAGE_DS, Lab, LabConfig

from tests.backup.conftest import BackupEnv
from tests.backup.test_backups import backed_up, scattered
from tests.tm.conftest import disk_path

MiB = 1 << 20
ONLY_CHANGED = "only those are read"


def bytes_read(run) -> int:
    found = re.findall(r"disk 0: .* (\d+) bytes read", run.pre.stderr)
    assert found, run.pre.stderr
    return int(found[-1])


def restores(env, vm, run) -> bool:
    return env.bds.restored_bytes(run.image_id, 0, run.increment) == env.disk_bytes(vm, 0)


@pytest.fixture(scope="module")
def cenv():
    with Lab(LabConfig(hosts=2)) as lab:
        yield BackupEnv(lab)


def test_a_chain_through_the_changed_block_path_restores_byte_for_byte(cenv):
    env = cenv
    vm = env.vm_with_disks(40, sizes=(64, 16))
    env.write(vm, 0, b"F" * MiB, 5 * MiB)
    full = backed_up(env, vm, disks=(0,))
    assert restores(env, vm, full)

    scattered(env, vm, 0, 8, 64, 1)                                     # writes
    run = backed_up(env, vm, disks=(0,))
    assert ONLY_CHANGED in run.pre.stderr, run.pre.stderr
    assert bytes_read(run) <= 16 * 128 * 1024                           # 8 writes, each in at most 2 blocks
    assert restores(env, vm, run)

    dev = disk_path(vm.id, 0)                                            # a discard: zeros now
    env.lab.host("node1").run_inside(f"blkdiscard -o {5 * MiB} -l {MiB} $(readlink -f {dev})")
    run = backed_up(env, vm, disks=(0,))
    assert ONLY_CHANGED in run.pre.stderr and "unmapped now" in run.pre.stderr, run.pre.stderr
    assert env.disk_bytes(vm, 0)[5 * MiB:6 * MiB] == bytes(MiB)
    assert restores(env, vm, run)

    assert env.r.tm("resize", f"node1:{dev}", 96, vm.id, IMAGE_DS).ok    # grown, and its last block written
    env.write(vm, 0, b"L" * 65536, 96 * MiB - 65536)
    run = backed_up(env, vm, disks=(0,))
    assert ONLY_CHANGED in run.pre.stderr, run.pre.stderr
    assert restores(env, vm, run)

    assert env.r.tm("snap_create", f"node1:{dev}", 0, vm.id, IMAGE_DS).ok
    env.write(vm, 0, b"S" * 65536, 7 * MiB)
    run = backed_up(env, vm, disks=(0,))
    vm.lcm_state = "DISK_SNAPSHOT_REVERT_POWEROFF"
    assert env.r.tm("snap_revert", f"node1:{dev}", 0, vm.id, IMAGE_DS).ok  # a disk snapshot revert
    vm.lcm_state = "RUNNING"
    run = backed_up(env, vm, disks=(0,))
    assert ONLY_CHANGED in run.pre.stderr, run.pre.stderr
    assert restores(env, vm, run)


def test_a_pool_chunk_of_four_blocks(cenv):
    env = cenv
    env.lab.linstor.set_thin_chunk(256)
    try:
        vm = env.vm_with_disks(41, sizes=(32, 16))
        backed_up(env, vm, disks=(0,))
        env.write(vm, 0, b"Q" * 4096, 3 * MiB + 70000)                  # inside one 256 KiB chunk
        run = backed_up(env, vm, disks=(0,))
        assert ONLY_CHANGED in run.pre.stderr and "says 4 blocks changed" in run.pre.stderr, run.pre.stderr
        assert restores(env, vm, run)
    finally:
        env.lab.linstor.set_thin_chunk(64)


def fallback(env, vm, why: str):
    run = backed_up(env, vm, disks=(0,))
    assert ONLY_CHANGED not in run.pre.stderr and why in run.pre.stderr, run.pre.stderr
    assert restores(env, vm, run)
    return run


def test_where_the_pool_cannot_say_the_whole_snapshot_is_read(cenv):
    env = cenv
    vm = env.vm_with_disks(42, sizes=(32, 16))
    backed_up(env, vm, disks=(0,))
    scattered(env, vm, 0, 4, 32, 2)
    for node in env.lab.node_names:                                       # no thin_delta on the hosts
        env.lab.fail_command(node, "thin_delta")
    try:
        run = fallback(env, vm, "changed blocks:")
    finally:
        env.lab.clear_command_faults()
    assert bytes_read(run) >= 32 * MiB
    scattered(env, vm, 0, 4, 32, 3)
    held = []                                                             # another user holds the metadata snapshot
    for node in env.lab.node_names:
        flag = env.lab.host(node).path("/dev/mapper") / ".lab-linstor_data-thinpool.held"
        flag.parent.mkdir(parents=True, exist_ok=True)
        flag.touch()
        held.append(flag)
    try:
        fallback(env, vm, "held by another user")
    finally:
        for flag in held:
            flag.unlink()
    scattered(env, vm, 0, 4, 32, 4)
    digests = env.lab.one_location / "var" / "linstor_un" / "digests"      # the front-end lost its digests
    import shutil
    shutil.rmtree(digests)
    fallback(env, vm, "no digests of the last backup here")
    scattered(env, vm, 0, 4, 32, 5)                                      # and back on the changed-block path
    run = backed_up(env, vm, disks=(0,))
    assert ONLY_CHANGED in run.pre.stderr, run.pre.stderr
    assert restores(env, vm, run)


@pytest.mark.parametrize("signal_number", [9, 15])
def test_killed_while_asking_the_pool_the_metadata_snapshot_is_released(cenv, signal_number):
    """The driver stopped while thin_delta runs: the pool's metadata snapshot (one per pool,
    LINSTOR's own backup shipping needs it too) is released, and the retry takes the same path."""
    env = cenv
    vm = env.vm_with_disks(43 + (signal_number == 15), sizes=(32, 16))
    backed_up(env, vm, disks=(0,))
    scattered(env, vm, 0, 4, 32, 6)
    marks = []
    for node in env.lab.node_names:
        shim = env.lab.host(node).path("/usr/local/bin") / "thin_delta"
        shim.write_text("#!/bin/sh\ntouch /var/tmp/one/thin-delta-running\nexec sleep 600\n")
        shim.chmod(0o755)
        marks.append(env.lab.host(node).path("/var/tmp/one") / "thin-delta-running")
    try:
        killed = env.bds.backup(env.r, vm, [0], live=False, kill_when=lambda: any(m.exists() for m in marks),
                                kill_signal=signal_number)
    finally:
        env.lab.clear_command_faults()
        for node, mark in zip(env.lab.node_names, marks):
            mark.unlink(missing_ok=True)
    assert not killed.ok
    import time
    deadline = time.monotonic() + 15
    held = [env.lab.host(n).path("/dev/mapper") / ".lab-linstor_data-thinpool.held" for n in env.lab.node_names]
    while any(h.exists() for h in held):
        assert time.monotonic() < deadline, "the pool's metadata snapshot is still held"
        time.sleep(0.2)
    for node in env.lab.node_names:
        assert env.lab.host(node).run_inside("pgrep -f 'slee[p] 600'", check=False).returncode != 0
    run = backed_up(env, vm, disks=(0,))
    assert ONLY_CHANGED in run.pre.stderr, run.pre.stderr
    assert restores(env, vm, run)
