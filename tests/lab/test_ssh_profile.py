"""The driver reaches hosts the way oneadmin's ssh configuration says, through the OpenSSH client:
OpenNebula's shared master connections, a jump host, Match and Include, a front-end without any
Control* options; and nothing an action started on a host outlives it."""
from __future__ import annotations

import subprocess
import time

import pytest

from lab.lab import JUMP, SYSTEM_DS, Lab, LabConfig
from lab.oned import VM, Disk, History

SYS = f"/var/lib/one//datastores/{SYSTEM_DS}"


def accepted(lab, host: str) -> int:
    """SSH connections the host's sshd accepted so far (sshd -e logs each one)."""
    return (lab.host(host).root / "host.log").read_text().count("Accepted publickey")


def mkswap(lab, host: str, vm_id: int, **kw):
    lab.oned.add(VM(vm_id, lcm_state="PROLOG", disks=[Disk(0, SYSTEM_DS, type="swap", size=8)],
                    history=[History(host, SYSTEM_DS)]))
    return lab.runner().tm("mkswap", 8, f"{host}:{SYS}/{vm_id}/disk.0", vm_id, SYSTEM_DS, **kw)


def volumes(lab) -> set[str]:
    with lab.client() as c:
        return {rd.name for rd in c.resource_dfn_list_raise().resource_definitions}


def one_line(result) -> str:
    lines = [ln for ln in result.stderr.strip().splitlines() if not ln.startswith("INFO")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_actions_ride_opennebulas_master_connection(lab):
    assert mkswap(lab, "node1", 10).ok                  # two commands (mkswap, ln): one connection
    socks = list(lab.socks.glob("ctl-M-*.sock"))
    assert socks, "no master socket in the packaged ControlPath"
    before = accepted(lab, "node1")
    result = mkswap(lab, "node1", 11)
    assert result.ok, str(result)
    assert accepted(lab, "node1") == before, "the second action opened a new SSH connection"


def test_a_host_behind_a_jump_host(lab):
    hosts_conf = (lab.home / ".ssh" / "config.d" / "hosts.conf").read_text()
    assert "Host node3\n" in hosts_conf and f"ProxyJump {JUMP}" in hosts_conf
    jumped = accepted(lab, JUMP)
    result = mkswap(lab, "node3", 20)
    assert result.ok, str(result)
    assert accepted(lab, JUMP) > jumped, "node3 was not reached through the jump host"
    assert lab.host("node3").run_inside(f"test -L {SYS}/20/disk.0", check=False).returncode == 0

    lab.close_masters()
    lab.host(JUMP).stop()                               # the way to node3 is gone
    had = volumes(lab)
    start = time.monotonic()
    result = mkswap(lab, "node3", 21)
    assert result.rc != 0 and time.monotonic() - start < 30
    line = one_line(result)
    assert "node3" in line and "cannot connect over SSH" in line, line
    assert volumes(lab) == had                          # the new volume was rolled back
    assert mkswap(lab, "node1", 22).ok                  # other hosts are unaffected


def test_match_blocks_and_included_files_apply(lab):
    config = lab.home / ".ssh" / "config"
    assert "HostName" not in config.read_text()         # every host block is in an Included file
    hosts_conf = lab.home / ".ssh" / "config.d" / "hosts.conf"
    # node2's block as a Match (with `exec`, which a Python SSH library needs extra modules for)
    hosts_conf.write_text(hosts_conf.read_text().replace(
        "Host node2\n", 'Match originalhost node2 exec "test -d %d"\n'))
    lab.close_masters()
    result = mkswap(lab, "node2", 30)
    assert result.ok, str(result)
    # a Match that no longer matches: node2 is then unknown by that name (no HostName): refused
    hosts_conf.write_text(hosts_conf.read_text().replace("exec \"test -d %d\"", "exec false"))
    lab.close_masters()
    result = mkswap(lab, "node2", 31)
    assert result.rc != 0
    assert "node2" in one_line(result)


def test_a_killed_action_leaves_nothing_running_on_the_host(lab):
    shim = lab.host("node1").path("/usr/local/bin") / "mkswap"
    shim.write_text("#!/bin/sh\nexec sleep 600\n")
    shim.chmod(0o755)

    def sleeping() -> bytes:
        return lab.host("node1").run_inside("pgrep -f '^[s]leep 600' || true").stdout.strip()
    try:
        result = mkswap(lab, "node1", 40, kill_when=lambda: bool(sleeping()))
        assert result.rc == -9, str(result)
        deadline = time.monotonic() + 10
        while sleeping() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert sleeping() == b"", "the killed action's command still runs on the host"
    finally:
        shim.unlink()
        lab.host("node1").run_inside("pkill -f '^[s]leep 600'", check=False)


@pytest.fixture
def plain_lab():
    with Lab(LabConfig(hosts=2, ssh_profile="plain")) as lab:
        yield lab


def test_a_front_end_without_control_options_gets_one_connection_per_action(plain_lab):
    lab = plain_lab
    assert "Control" not in (lab.home / ".ssh" / "config").read_text()
    for vm_id in (50, 51):
        before = accepted(lab, "node1")
        result = mkswap(lab, "node1", vm_id)            # two commands on node1
        assert result.ok, str(result)
        assert accepted(lab, "node1") == before + 1
    assert not list(lab.socks.iterdir())
    # the action's private master ended with it
    masters = subprocess.run(["pgrep", "-f", "[C]ontrolPath=/tmp/lsu-ssh-"], capture_output=True).stdout
    assert masters == b"", masters
