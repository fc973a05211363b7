"""The driver against what each LINSTOR release really does (the lab's controller plays the release:
lab/linstor_emu/spec.py and the rules in controller.py): a resource-group datastore before 1.27,
the rollback of 1.31.0 onwards, and every delete-then-make-again flow with a node offline."""
from __future__ import annotations

import pytest

from lab.lab import FRONTEND, IMAGE_DS, Lab, LabConfig
from lab.oned import Disk
from tests.tm.conftest import PATTERN, Env, disk_path


def ok(result):
    assert result.ok, str(result)
    return result


def failed(result, *words):
    assert not result.ok and result.stderr.strip(), str(result)
    line = result.stderr.strip().splitlines()[-1]
    for word in words:
        assert word in line, line
    return line


def lab_at(version: str, **kw) -> Lab:
    return Lab(LabConfig(hosts=3, linstor_version=version, **kw))


# ---- a RESOURCE_GROUP datastore: the spawn carries the marks from 1.27 only ---------------------------
@pytest.mark.parametrize("version,spawns", [("1.26.2", False), ("1.27.0", True)])
def test_volumes_of_a_group_datastore_are_born_marked(version, spawns):
    with lab_at(version) as lab:
        env = Env(lab)
        img = env.image(10, data=PATTERN)
        env.vm(11, [Disk(0, IMAGE_DS, image_id=10, source=img.source, size=32)])
        lab.linstor.clear_requests()
        ok(env.clone(img, 11, 0))
        assert env.read("node1", disk_path(11, 0)) == PATTERN
        assert env.rds()["one-vm-11-disk-0"]["Aux/one/linstor_un/MADE_FOR"]
        posts = [r for r in lab.linstor.requests() if r["method"] == "POST"]
        spawn = [r for r in posts if r["path"].endswith("/spawn")]
        assert bool(spawn) == spawns
        if not spawns:      # the definition is born in the group with its marks, then placed
            create = next(r for r in posts if r["path"] == "/v1/resource-definitions")
            assert create["body"]["resource_definition"]["resource_group_name"] == "one_rg"
            assert create["body"]["resource_definition"]["props"]["Aux/one/linstor_un/MADE_FOR"]
        assert lab.linstor.violations() == []


# ---- rollback: from 1.31.0 a delete and a restore ----------------------------------------------------
def persistent_disk_on_a_diskless_host(env: Env, vm_id: int, image_id: int):
    """A persistent image on node2 and node3, used by a VM on node1 (attached there diskless)."""
    img = env.image(image_id, data=PATTERN, persistent=True, nodes=["node2", "node3"])
    env.vm(vm_id, [Disk(0, IMAGE_DS, image_id=image_id, source=img.source, size=32, persistent=True)],
           lcm="LCM_INIT", state="POWEROFF")
    ok(env.r.tm("ln", f"{FRONTEND}:{img.source}", f"node1:{disk_path(vm_id, 0)}", vm_id, IMAGE_DS))
    res = f"one-image-{image_id}"
    assert "DISKLESS" in env.replicas(res)["node1"]
    return res, disk_path(vm_id, 0)


@pytest.mark.parametrize("version", ["1.30.4", "1.31.0", "1.31.1", "1.31.2", "1.31.3"])
def test_revert_leaves_the_host_attached_and_the_properties_as_they_were(version):
    """1.31.0/1.31.1 do not make the host's diskless replica again (its link would dangle); from
    1.31.0 the snapshot's copy of the definition's properties comes back (the snapshot token the
    driver had removed, the owner properties of the time)."""
    with lab_at(version) as lab:
        env = Env(lab)
        res, path = persistent_disk_on_a_diskless_host(env, 20, 21)
        ok(env.r.tm("snap_create", f"node1:{path}", 0, 20, IMAGE_DS))
        lab.write_device("node1", path, b"new!" * 1024)
        ok(env.r.tm("snap_create", f"node1:{path}", 1, 20, IMAGE_DS))
        lab.write_device("node1", path, b"newer" * 800)
        before = env.rds()[res]
        result = ok(env.r.tm("snap_revert", f"node1:{path}", 0, 20, IMAGE_DS))     # not the newest
        assert ("restored through" in result.stderr) == (version < "1.31.0"), result.stderr
        attached_with(env, res, path, PATTERN)
        ours = lambda props: {k: v for k, v in props.items() if k.startswith("Aux/")}     # noqa: E731
        assert ours(env.rds()[res]) == ours(before)
        ok(env.r.tm("snap_revert", f"node1:{path}", 1, 20, IMAGE_DS))                # the newest
        attached_with(env, res, path, b"new!" * 1024)
        assert ours(env.rds()[res]) == ours(before)
        assert lab.linstor.violations() == []


def attached_with(env: Env, res: str, path: str, data: bytes) -> None:
    """The VM's link on node1 leads to its diskless replica there, which holds `data`."""
    assert env.link("node1", path) == f"/dev/drbd/by-res/{res}/0"
    flags = env.replicas(res).get("node1", {"gone"})
    assert "DISKLESS" in flags and "TIE_BREAKER" not in flags, flags
    assert env.read("node1", path) == data


@pytest.mark.parametrize("version,reverts", [("1.20.0", False), ("1.33.2", True)])
def test_revert_with_a_node_offline_copies_the_snapshot_back(version, reverts):
    """LINSTOR refuses a rollback while a node of the resource is offline, at every release: the
    snapshot is copied back, under a safety snapshot - which LINSTOR before 1.26.1 cannot take
    with a disk offline: then the revert stops before it writes anything."""
    with lab_at(version) as lab:
        env = Env(lab)
        res, path = persistent_disk_on_a_diskless_host(env, 30, 31)
        ok(env.r.tm("snap_create", f"node1:{path}", 0, 30, IMAGE_DS))
        lab.write_device("node1", path, b"new!" * 1024)
        lab.linstor.set_node_status("node3", "OFFLINE")
        result = env.r.tm("snap_revert", f"node1:{path}", 0, 30, IMAGE_DS)
        if reverts:
            ok(result)
            assert "satellite 'node3'" in result.stderr, result.stderr
            assert env.read("node1", path) == PATTERN
        else:
            failed(result, "node3")
            assert env.read("node1", path) == b"new!" * 1024
        lab.linstor.set_node_status("node3", "ONLINE")
        assert not [n for n in env.rds() if n.endswith("-tmp")]


# ---- deletions LINSTOR finishes only when a node is back --------------------------------------------
def cloned_disk(env: Env, vm_id: int, image_id: int):
    img = env.image(image_id, data=PATTERN)
    env.vm(vm_id, [Disk(0, IMAGE_DS, image_id=image_id, source=img.source, size=32)])
    ok(env.clone(img, vm_id, 0))
    res = f"one-vm-{vm_id}-disk-0"
    diskful = sorted(n for n, f in env.replicas(res).items() if "DISKLESS" not in f)
    return img, res, diskful


@pytest.mark.parametrize("version", ["1.20.0", "1.33.2"])
def test_delete_with_a_node_offline_is_finished_by_linstor(version):
    with lab_at(version) as lab:
        env = Env(lab)
        _, res, diskful = cloned_disk(env, 40, 41)
        offline = next(n for n in diskful if n != "node1")
        lab.linstor.set_node_status(offline, "OFFLINE")
        result = ok(env.r.tm("delete", f"node1:{disk_path(40, 0)}", 40, IMAGE_DS))
        assert f"LINSTOR finishes deleting it when node {offline} is back online" in result.stderr
        ok(env.r.tm("delete", f"node1:{disk_path(40, 0)}", 40, IMAGE_DS))          # oned's retry
        lab.linstor.set_node_status(offline, "ONLINE")
        assert res not in env.rds()


def test_delete_of_a_disk_with_snapshots_waits_for_the_node_and_loses_nothing():
    with lab_at("1.33.2") as lab:
        env = Env(lab)
        _, res, diskful = cloned_disk(env, 50, 51)
        ok(env.r.tm("snap_create", f"node1:{disk_path(50, 0)}", 0, 50, IMAGE_DS))
        offline = next(n for n in diskful if n != "node1")
        lab.linstor.set_node_status(offline, "OFFLINE")
        failed(env.r.tm("delete", f"node1:{disk_path(50, 0)}", 50, IMAGE_DS),
               f"node {offline} is back online", "Retry")
        assert res in env.rds()
        lab.linstor.set_node_status(offline, "ONLINE")
        ok(env.r.tm("delete", f"node1:{disk_path(50, 0)}", 50, IMAGE_DS))
        assert res not in env.rds()


def test_a_retry_that_would_make_again_a_volume_linstor_is_deleting_stops_with_one_line():
    with lab_at("1.33.2") as lab:
        env = Env(lab)
        img, res, diskful = cloned_disk(env, 60, 61)
        offline = next(n for n in diskful if n != "node1")
        lab.linstor.set_node_status(offline, "OFFLINE")
        with lab.client() as c:
            c.resource_dfn_delete(res)                # deferred: the name stays taken
        line = failed(env.clone(img, 60, 0), res, "being deleted by LINSTOR", f"node {offline} is back online")
        assert "Traceback" not in line
        lab.linstor.set_node_status(offline, "ONLINE")
        ok(env.clone(img, 60, 0))
        assert env.read("node1", disk_path(60, 0)) == PATTERN


def test_linstor_copies_only_with_every_disk_online():
    """1.31.0+ refuses to clone a volume with a disk offline: the copy goes through the host."""
    with lab_at("1.33.2") as lab:
        env = Env(lab)
        img = env.image(70, data=PATTERN, nodes=["node1", "node2"])
        env.vm(71, [Disk(0, IMAGE_DS, image_id=70, source=img.source, size=32)], host="node3")
        lab.linstor.set_node_status("node2", "OFFLINE")
        result = ok(env.clone(img, 71, 0, host="node3"))
        assert "copied through node3 (LINSTOR's clone failed" in result.stderr, result.stderr
        assert "non-UpToDate" in result.stderr, result.stderr
        assert env.read("node3", disk_path(71, 0)) == PATTERN
        lab.linstor.set_node_status("node2", "ONLINE")


def test_ds_clone_with_a_disk_of_the_image_offline_copies_through_a_bridge():
    from lab.oned import Image, to_xml
    from lab.runner import ds_action_data
    with lab_at("1.33.2") as lab:
        env = Env(lab)
        env.image(80, data=PATTERN, nodes=["node1", "node2"])
        lab.linstor.set_node_status("node2", "OFFLINE")
        image = Image(81, "c", IMAGE_DS, path="/dev/drbd/by-res/one-image-80/0", size=32, cloning_id=80)
        data = ds_action_data(to_xml(image.element()), to_xml(lab.oned.datastores[IMAGE_DS].element()))
        result = ok(env.r.ds("clone", data, 81))
        assert "LINSTOR's clone failed" in result.stderr and "non-UpToDate" in result.stderr, result.stderr
        assert result.stdout == "/dev/drbd/by-res/one-image-81/0\n"
        node = next(n for n, f in env.replicas("one-image-81").items() if "DISKLESS" not in f)
        assert lab.read_device(node, "/dev/drbd/by-res/one-image-81/0") == PATTERN
        assert "Aux/one/linstor_un/BUILDING" not in env.rds()["one-image-81"]
        lab.linstor.set_node_status("node2", "ONLINE")


def test_save_as_with_the_new_images_volume_on_an_offline_node_copies_into_it():
    """LINSTOR's copy replaces DS mkfs's volume (deleted, made again): with a node of it offline
    LINSTOR would keep the name until the node is back, so the bytes go into it through a host."""
    with lab_at("1.33.2") as lab:
        env = Env(lab)
        img = env.image(90, data=PATTERN, nodes=["node1", "node2"])
        env.vm(91, [Disk(0, IMAGE_DS, image_id=90, source=img.source, size=32)], lcm="LCM_INIT", state="POWEROFF")
        ok(env.clone(img, 91, 0))
        target = env.save_as_volume(92, 32)
        holders = sorted(n for n, f in env.replicas("one-image-92").items() if "DISKLESS" not in f)
        offline = next(n for n in holders if n != "node1")
        lab.linstor.set_node_status(offline, "OFFLINE")
        result = ok(env.r.tm("cpds", f"node1:{disk_path(91, 0)}", target.source, -1, 91, IMAGE_DS))
        assert f"copied through node1 ({offline} offline: the image's volume could not be made anew)" in \
            result.stderr, result.stderr
        lab.linstor.set_node_status(offline, "ONLINE")
        assert "DELETE" not in str(env.replicas("one-image-92"))
        assert lab.read_device(offline, "/dev/drbd/by-res/one-image-92/0") == PATTERN
