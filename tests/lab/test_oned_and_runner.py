"""The emulated oned XML-RPC endpoint and the runner that calls drivers as oned's MADs do."""
from __future__ import annotations

import base64
import json
import os
import xmlrpc.client
from pathlib import Path

import pytest
from lxml import etree

from lab.oned import VM, Datastore, Disk, History, Host, Image, OnedEndpoint
from lab.runner import OnedRunner, ds_action_data, mad_environment, vmm_action_data

DATA = Path(__file__).resolve().parents[2] / "lab" / "data"


def tags(xml: str) -> list[str]:
    return [c.tag for c in etree.fromstring(xml.encode())]


def fixture_tags(name: str) -> list[str]:
    return [c.tag for c in etree.parse(str(DATA / name)).getroot()]


@pytest.fixture
def oned():
    endpoint = OnedEndpoint(auth="oneadmin:secret")
    endpoint.start()
    yield endpoint
    endpoint.stop()


def call(endpoint, method, *args, session="oneadmin:secret"):
    proxy = xmlrpc.client.ServerProxy(endpoint.url)
    return getattr(proxy, method)(session, *args)


def test_auth_is_checked(oned):
    oned.add(VM(5))
    ok, msg, code = call(oned, "one.vm.info", 5, session="oneadmin:wrong")
    assert not ok and "authenticated" in msg and code == 0x100
    ok, msg, code = call(oned, "one.vm.info", 6)
    assert not ok and "[6]" in msg and code == 0x400
    assert call(oned, "one.system.version") == [True, "7.0.2", 0]
    assert [m for m, _ in oned.calls] == ["one.vm.info", "one.vm.info", "one.system.version"]


def test_documents_have_the_real_shape(oned):
    disks = [Disk(0, 100, image_id=3, source="one-image-3", snapshots=[{"id": 0, "size": 12}, {"id": 1}]),
             Disk(1, 100, image_id=4, source="one-image-4", persistent=True, snapshots=[{"id": 0}]),
             Disk(2, 101, type="fs", fs="ext4", size=30), Disk(3, 101, type="swap", size=8)]
    oned.add(VM(7, lcm_state="RUNNING", disks=disks, history=[History("node1", 101), History("node2", 101)],
                context={"DISK_ID": 4, "TARGET": "hda"}))
    oned.add(Datastore(100, "img", template={"BRIDGE_LIST": "node1 node2", "CLONE_MODE": "snapshot"}))
    oned.add(Datastore(101, "sys", "SYSTEM_DS"))
    oned.add(Image(3, "ubuntu", 100, source="one-image-3", snapshots=[{"id": 0, "size": 5}], vms=[7]))
    oned.add(Host(0, "node1", vms=[7]))
    vm = call(oned, "one.vm.info", 7)[1]
    assert tags(vm) == fixture_tags("onevm-show-1.xml")     # one SNAPSHOTS element per disk with snapshots
    root = etree.fromstring(vm.encode())
    assert root.findtext("LCM_STATE") == "3" and root.findtext("STATE") == "3"
    assert [d.findtext("SOURCE") for d in root.findall("TEMPLATE/DISK")][:2] == ["one-image-3", "one-image-4"]
    assert root.findtext("TEMPLATE/DISK[DISK_ID='1']/PERSISTENT") == "YES"
    assert root.findtext("TEMPLATE/DISK[DISK_ID='2']/FS") == "ext4"
    assert root.findtext("HISTORY_RECORDS/HISTORY[last()]/HOSTNAME") == "node2"
    assert len(root.findall("SNAPSHOTS[DISK_ID='0']/SNAPSHOT")) == 2
    assert root.findtext("TEMPLATE/CONTEXT/TARGET") == "hda"
    ds = call(oned, "one.datastore.info", 100)[1]
    assert tags(ds) == fixture_tags("onedatastore-show-102-image.xml")
    assert etree.fromstring(ds.encode()).findtext("TEMPLATE/CLONE_MODE") == "snapshot"
    sysds = call(oned, "one.datastore.info", 101)[1]
    assert tags(sysds) == fixture_tags("onedatastore-show-103-system.xml")
    assert etree.fromstring(sysds.encode()).findtext("TYPE") == "1"
    image = call(oned, "one.image.info", 3)[1]
    assert tags(image) == fixture_tags("oneimage-show-3.xml")
    assert etree.fromstring(image.encode()).findtext("VMS/ID") == "7"
    host = call(oned, "one.host.info", 0)[1]
    assert tags(host) == fixture_tags("onehost-show-0.xml")
    pool = etree.fromstring(call(oned, "one.hostpool.info", -2, -1, -1)[1].encode())
    assert pool.tag == "HOST_POOL" and pool.findtext("HOST/NAME") == "node1"


TRACER = r"""#!/usr/bin/env python3
import json, os, sys
json.dump({"argv": sys.argv[1:], "stdin": sys.stdin.read(), "cwd": os.getcwd(),
           "env": {k: os.environ.get(k) for k in ("HOME", "ONE_LOCATION", "ONE_AUTH", "ONE_XMLRPC")}},
          sys.stdout)
"""


@pytest.fixture
def tree(tmp_path):
    one = tmp_path / "one"
    for sub in ("tm/linstor_un", "datastore/linstor_un", "vmm/kvm"):
        (one / "var" / "remotes" / sub).mkdir(parents=True)
    for script in ("tm/linstor_un/clone", "tm/linstor_un/premigrate", "tm/linstor_un/monitor",
                   "datastore/linstor_un/cp", "vmm/kvm/save_linstor_un"):
        path = one / "var" / "remotes" / script
        path.write_text(TRACER)
        path.chmod(0o755)
    return one


def run(tree, version, method, *args, **kw):
    env = mad_environment(tree.parent / "home", tree)
    env["PATH"] = os.environ["PATH"]
    runner = OnedRunner(tree, version, env, **kw)
    result = getattr(runner, method)(*args)
    assert result.ok, str(result)
    return json.loads(result.stdout)


def test_tm_arguments_are_shell_escaped_from_5_8(tree):
    src = "one-frontend:one-image-3"
    dst = "node1:/var/lib/one//datastores/101/5/disk.0"
    seen = run(tree, "7.0.2", "tm", "clone", src, dst, 5, 100)
    assert seen["argv"] == [src, dst, "5", "100"] and seen["stdin"] == ""
    assert seen["cwd"] == str(tree / "var")
    assert seen["env"]["ONE_AUTH"] is None and seen["env"]["ONE_XMLRPC"] is None
    # a value with a space stays one argument from 5.8 on, and is split on 5.6
    assert run(tree, "6.0.0", "tm", "clone", "a b", dst, 5, 100)["argv"][0] == "a b"
    assert run(tree, "5.6.0", "tm", "clone", "a b", dst, 5, 100)["argv"][:2] == ["a", "b"]


def test_ds_input_conventions(tree):
    data = ds_action_data("<IMAGE><ID>3</ID></IMAGE>", "<DATASTORE><ID>100</ID></DATASTORE>")
    b64 = base64.b64encode(data.encode()).decode()
    old = run(tree, "6.6.0", "ds", "cp", data, 3)
    assert old["argv"] == [b64, "3"] and old["stdin"] == ""
    opt = run(tree, "6.6.2", "ds", "cp", data, 3, ds_stdin_option=True)
    assert opt["argv"] == ["-", "3"] and opt["stdin"] == b64
    new = run(tree, "6.8.0", "ds", "cp", data, 3)
    assert new["argv"] == ["3"] and base64.b64decode(new["stdin"]).decode() == data
    mon = run(tree, "7.0.2", "tm_monitor", data, 101)
    assert mon["argv"] == ["101"] and mon["stdin"] == b64


def test_migrate_template_moves_to_stdin_in_5_10(tree):
    vm = "<VM><ID>5</ID></VM>"
    b64 = base64.b64encode(vm.encode()).decode()
    old = run(tree, "5.8.0", "migrate", "premigrate", "node1", "node2", "/var/lib/one//datastores/101/5", 5, 101,
              vm, "ceph")
    assert old["argv"] == ["node1", "node2", "/var/lib/one//datastores/101/5", "5", "101", b64, "ceph"]
    new = run(tree, "5.10.0", "migrate", "premigrate", "node1", "node2", "/var/lib/one//datastores/101/5", 5,
              101, vm, "ceph")
    assert new["argv"] == ["node1", "node2", "/var/lib/one//datastores/101/5", "5", "101", "ceph"]
    assert new["stdin"] == b64


def test_vmm_local_action_stdin(tree):
    xml = vmm_action_data("<VM><ID>5</ID>" + "<X>y</X>" * 30 + "</VM>", "<DATASTORE><ID>101</ID></DATASTORE>",
                          "node1", "one-5", "/var/lib/one//datastores/101/5/checkpoint")
    new = run(tree, "7.0.2", "save", "one-5", "/var/lib/one//datastores/101/5/checkpoint", "node1", 5, xml)
    assert new["argv"] == ["one-5", "/var/lib/one//datastores/101/5/checkpoint", "node1", "5", "node1"]
    assert "\n" not in new["stdin"] and base64.b64decode(new["stdin"]).decode() == xml
    old = run(tree, "5.10.0", "save", "one-5", "/var/lib/one//datastores/101/5/checkpoint", "node1", 5, xml)
    assert "\n" in old["stdin"].strip() and base64.b64decode(old["stdin"]).decode() == xml


def test_transfer_file_stops_at_first_failure(tree):
    env = mad_environment(tree.parent / "home", tree)
    env["PATH"] = os.environ["PATH"]
    fail = tree / "var" / "remotes" / "tm" / "linstor_un" / "mkimage"
    fail.write_text("#!/bin/sh\necho boom >&2\nexit 1\n")
    fail.chmod(0o755)
    runner = OnedRunner(tree, "7.0.2", env)
    results = runner.transfer(["CLONE linstor_un fe:one-image-0 node1:/d/101/5/disk.0 5 100",
                               "MKIMAGE linstor_un 10 raw node1:/d/101/5/disk.1 5 101",
                               "CLONE linstor_un fe:one-image-0 node1:/d/101/5/disk.2 5 100"])
    assert [r.rc for r in results] == [0, 1]
    assert results[1].stderr == "boom\n"
