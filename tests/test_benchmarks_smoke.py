"""A short pass of the benchmarks, so they keep working (numbers are not checked here)."""
import subprocess

import pytest

from benchmarks.run import (ABOVE_MINIMUM, MINIMUM, PARAMIKO_BASELINE, REPO, SSH_ACTIONS, backups, clone_copy,
                            concurrency,
                            freeze_times, run, scale, ssh_modes, table, throughput, vm_snapshot_pause,
                            vmm_rows)


def test_benchmarks_run_once():
    rows = run(1) + vmm_rows(1)
    assert {r["action"] for r in rows} == set(MINIMUM)
    # the stated minimum is a floor, and a count above minimum + 1 needs a written reason
    assert all(r["min_requests"] <= r["linstor_requests"] for r in rows)
    assert all(r["linstor_requests"] <= r["min_requests"] + 1 or r["action"] in ABOVE_MINIMUM for r in rows), \
        [(r["action"], r["linstor_requests"], r["min_requests"]) for r in rows]
    # python-linstor's connect adds its https-redirect probe and version check, nothing else
    assert all(r["http_requests"] <= r["linstor_requests"] + 2 for r in rows)
    assert "median_s" in table(rows)


def test_scale_throughput_concurrency_small():
    m = scale([50])
    assert [x["vms_reported"] for x in m if x["what"] == "tm/monitor"] == [50]
    t = throughput(16)
    assert {x["image"] for x in t} == {"raw", "qcow2"}
    c = concurrency(3)
    assert c["succeeded"] == 3
    k = clone_copy(16, rounds=1)
    assert k["linstor_clone_s"] > 0 and k["host_copy_s"] > 0
    assert k["cpds_linstor_s"] > 0 and k["cpds_host_s"] > 0


def test_backup_rows_small():
    b = backups(64, rounds=1)
    assert b["increment_file_mib"] <= b["increment_bytes_limit_mib"]
    # the changed-block path reads what changed, the digest path the whole disk
    assert 0 <= b["increment_device_read_mib"] <= b["increment_read_limit_mib"] < b["digest_device_read_mib"]
    f = freeze_times(disks=2, rounds=1)
    assert 0 < f["frozen_median_s"] < 30


def test_vm_snapshot_pause_once():
    v = vm_snapshot_pause(disks=2, memory_mib=64, rounds=1)
    assert v["memory_filled"] and 0 < v["pause_median_s"] and v["save_restore_stop_median_s"] > 0


def test_ssh_modes_once():
    if subprocess.run(["git", "-C", str(REPO), "cat-file", "-e", PARAMIKO_BASELINE], capture_output=True).returncode:
        pytest.skip(f"this checkout has no history back to {PARAMIKO_BASELINE} (the paramiko baseline)")
    rows = ssh_modes(1)
    assert [r["action"] for r in rows] == SSH_ACTIONS
    assert all(r["warm_median_s"] > 0 and r["cold_median_s"] > 0 and r["paramiko_median_s"] > 0 for r in rows)
