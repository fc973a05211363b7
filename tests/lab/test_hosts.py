"""Simulated hosts: real sshd per host, per-host /dev and datastore directories, libvirt + QEMU."""
from __future__ import annotations

import os
import subprocess
import time

import linstor
import pytest

MIB = 1024


def ssh(lab, host: str, command: str, input: bytes = b"") -> subprocess.CompletedProcess:
    config = lab.home / ".ssh" / "config"
    return subprocess.run(["ssh", "-F", str(config), host, command], input=input, capture_output=True,
                          timeout=120)


def visible(lab, node: str) -> set[str]:
    """Resource names whose udev link /dev/drbd/by-res/<rsc>/0 exists on the host."""
    out = ssh(lab, node, "ls /dev/drbd/by-res 2>/dev/null || true").stdout.decode().split()
    return set(out)


def placed(client, node: str) -> set[str]:
    return {r.name for r in client.resource_list_raise(filter_by_nodes=[node]).resources}


def assert_visibility_matches(lab, client) -> None:
    for node in lab.node_names:
        assert visible(lab, node) == placed(client, node), node


def test_devices_follow_placement(lab):
    with lab.client() as c:
        assert_visibility_matches(lab, c)
        c.resource_group_spawn("one_rg", "one-image-0", [16 * MIB])
        assert_visibility_matches(lab, c)
        c.resource_dfn_create("solo")
        c.volume_dfn_create("solo", 8 * MIB)
        c.resource_create([linstor.ResourceData("node1", "solo", storage_pool="data")])
        assert visible(lab, "node1") >= {"solo"} and "solo" not in visible(lab, "node2")
        c.resource_make_available("node2", "solo")
        assert "solo" in visible(lab, "node2")
        c.resource_delete("node2", "solo")
        assert "solo" not in visible(lab, "node2")
        assert_visibility_matches(lab, c)
        # the device path LINSTOR reports exists on exactly the hosts that have the resource
        rscs = c.resource_list_raise(filter_by_resources=["one-image-0"]).resources
        device = rscs[0].volumes[0].device_path
        for node in lab.node_names:
            has = ssh(lab, node, f"test -b {device}").returncode == 0
            assert has == (node in {r.node_name for r in rscs}), node
        c.resource_dfn_delete("one-image-0")
        c.resource_dfn_delete("solo")
        assert_visibility_matches(lab, c)
        assert all(not visible(lab, n) for n in lab.node_names)


def test_host_paths_are_private(lab):
    assert ssh(lab, "node1", "mkdir -p /var/lib/one/datastores/101/7 && echo n1 > "
                             "/var/lib/one/datastores/101/7/marker").returncode == 0
    assert ssh(lab, "node1", "cat /var/lib/one/datastores/101/7/marker").stdout == b"n1\n"
    assert ssh(lab, "node2", "test -e /var/lib/one/datastores/101/7/marker").returncode != 0
    assert ssh(lab, "one-frontend", "test -e /var/lib/one/datastores/101/7/marker").returncode != 0
    assert (lab.host("node1").path("/var/lib/one/datastores/101/7/marker")).read_text() == "n1\n"
    # each host answers as itself
    assert ssh(lab, "node2", "echo $LAB_HOST").stdout.strip() == b"node2"


def test_bytes_written_on_one_host_are_read_on_another(lab):
    with lab.client() as c:
        c.resource_group_spawn("one_rg", "shared", [8 * MIB])
        c.resource_make_available("node3", "shared")
    payload = os.urandom(64 * 1024)
    dev = "/dev/drbd/by-res/shared/0"
    wrote = ssh(lab, "node1", f"dd of={dev} bs=64k seek=3 conv=notrunc,fsync status=none", input=payload)
    assert wrote.returncode == 0, wrote.stderr
    for node in ("node2", "node3"):
        got = ssh(lab, node, f"dd if={dev} bs=64k skip=3 count=1 status=none")
        assert got.stdout == payload, node


def test_in_use_follows_an_open_device(lab):
    with lab.client() as c:
        c.resource_group_spawn("one_rg", "held", [8 * MIB])
        holder = subprocess.Popen(["ssh", "-F", str(lab.home / ".ssh" / "config"), "node1",
                                   "exec 3<>/dev/drbd/by-res/held/0; echo open; sleep 30.4711"],
                                  stdout=subprocess.PIPE)
        assert holder.stdout.readline() == b"open\n"
        try:
            states = {s.node_name: s.in_use for s in c.resource_list_raise(filter_by_resources=["held"])
                      .resource_states}
            assert states["node1"] is True and states["node2"] is False
            replies = c.resource_delete("node1", "held")
            assert any(r.is_error() for r in replies)
        finally:
            holder.kill()
            # (the hosts share the machine's process ids: a pattern only this test's process has)
            ssh(lab, "node1", "pkill -f 'sleep 30[.]4711' || true")
        deadline = time.time() + 10
        while time.time() < deadline:
            states = {s.node_name: s.in_use for s in c.resource_list_raise(filter_by_resources=["held"])
                      .resource_states}
            if not states["node1"]:
                break
            time.sleep(0.2)
        assert states["node1"] is False


def test_unknown_host_key_is_refused(lab, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    config = lab.home / ".ssh" / "config"
    r = subprocess.run(["ssh", "-F", str(config), "-o", f"UserKnownHostsFile={empty}", "node1", "true"],
                       capture_output=True, timeout=30)
    assert r.returncode == 255 and b"host key verification failed" in r.stderr.lower(), r.stderr


DOMAIN = """<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>
<os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
<devices><disk type='block' device='disk'><driver name='qemu' type='raw' cache='none'/>
<source dev='/dev/drbd/by-res/{disk}/0'/><target dev='vda' bus='virtio'/></disk></devices></domain>"""


def test_libvirt_domain_saved_to_a_device_and_restored_elsewhere(libvirt_lab):
    lab = libvirt_lab
    with lab.client() as c:
        c.resource_group_spawn("one_rg", "one-vm-1-disk-0", [16 * MIB])
        c.resource_dfn_create("one-vm-1-checkpoint")
        c.volume_dfn_create("one-vm-1-checkpoint", 256 * MIB)
        c.resource_create([linstor.ResourceData("node1", "one-vm-1-checkpoint", storage_pool="data")])
        xml = lab.host("node1").path("/var/lib/one/datastores") / "one-1.xml"
        xml.write_text(DOMAIN.format(name="one-1", disk="one-vm-1-disk-0"))
        virsh = "virsh -c qemu:///system"
        r = ssh(lab, "node1", f"{virsh} create /var/lib/one/datastores/one-1.xml")
        assert r.returncode == 0, r.stderr
        assert b"running" in ssh(lab, "node1", f"{virsh} domstate one-1").stdout
        states = {s.node_name: s.in_use for s in c.resource_list_raise(filter_by_resources=["one-vm-1-disk-0"])
                  .resource_states}
        assert states["node1"] and not states["node2"]
        r = ssh(lab, "node1", f"{virsh} save one-1 /dev/drbd/by-res/one-vm-1-checkpoint/0")
        assert r.returncode == 0, r.stderr
        assert ssh(lab, "node1", f"{virsh} domstate one-1").returncode != 0      # gone from node1
        c.resource_make_available("node2", "one-vm-1-checkpoint")
        r = ssh(lab, "node2", f"{virsh} restore /dev/drbd/by-res/one-vm-1-checkpoint/0")
        assert r.returncode == 0, r.stderr
        assert b"running" in ssh(lab, "node2", f"{virsh} domstate one-1").stdout
        states = {s.node_name: s.in_use for s in c.resource_list_raise(filter_by_resources=["one-vm-1-disk-0"])
                  .resource_states}
        assert states["node2"] and not states["node1"]
        ssh(lab, "node2", f"{virsh} destroy one-1")
