"""A fault at each LINSTOR call and remote command of DS cp, clone, mkfs and snap_revert leaves
the state as it was before."""
from __future__ import annotations

import pytest

from lab.lab import IMAGE_DS, Lab, LabConfig, SYSTEM_DS
from lab.oned import Image

from tests.datastore.test_ds_actions import PATTERN, ds, raw_file
from tests.tm.conftest import Env
from tests.tm.test_faults import run_fault_matrix


@pytest.fixture(scope="module")
def fenv():
    with Lab(LabConfig(hosts=3, linstor_version="1.20.0")) as lab:
        for d in (IMAGE_DS, SYSTEM_DS):
            lab.oned.datastores[d].template.update(RESOURCE_GROUP="", NODE_LIST="node2 node3", STORAGE_POOL="data",
                                                   BRIDGE_LIST="node1")
        (lab.workdir / "images").mkdir()
        lab.oned.datastores[IMAGE_DS].template["SAFE_DIRS"] = str(lab.workdir / "images")
        yield Env(lab)


def image_rename(base):
    return lambda path, i: path.replace(f"one-image-{base}", f"one-image-{base + i}")


def test_cp_faults(fenv):
    env = fenv
    src = raw_file(env.lab.workdir / "images" / "f.raw", 16)
    run_fault_matrix(env, lambda i: None,
                     lambda i: ds(env, "cp", Image(100 + i, "f", IMAGE_DS, path=str(src), size=16)),
                     ["dd"], image_rename(100))


def test_cp_qcow2_faults(fenv):
    import subprocess
    env = fenv
    src = raw_file(env.lab.workdir / "images" / "q.raw", 16)
    qcow = src.with_suffix(".qcow2")
    subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(src), str(qcow)], check=True)
    # qcow2: the one-pass importer (python3 on the bridge)
    run_fault_matrix(env, lambda i: None,
                     lambda i: ds(env, "cp", Image(200 + i, "q", IMAGE_DS, path=str(qcow), size=16)),
                     ["python3"], image_rename(200))
    # other formats are staged, then converted
    vmdk = src.with_suffix(".vmdk")
    subprocess.run(["qemu-img", "convert", "-O", "vmdk", str(src), str(vmdk)], check=True)
    run_fault_matrix(env, lambda i: None,
                     lambda i: ds(env, "cp", Image(250 + i, "v", IMAGE_DS, path=str(vmdk), size=16)),
                     ["qemu-img", "cat"], image_rename(250))
    for host in env.lab.node_names:          # no staging file left by any failure
        assert env.lab.host(host).run_inside("ls /var/tmp").stdout.count(b"linstor_un-import") == 0


def test_mkfs_faults(fenv):
    env = fenv
    run_fault_matrix(env, lambda i: None,
                     lambda i: ds(env, "mkfs", Image(300 + i, "m", IMAGE_DS, format="raw", fs="ext4", size=16)),
                     ["mkfs.ext4"], image_rename(300))


def test_clone_faults(fenv):
    env = fenv
    src = raw_file(env.lab.workdir / "images" / "c.raw", 16)
    assert ds(env, "cp", Image(399, "c", IMAGE_DS, path=str(src), size=16)).ok
    run_fault_matrix(env, lambda i: None,
                     lambda i: ds(env, "clone", Image(400 + i, "c2", IMAGE_DS, path="/dev/drbd/by-res/one-image-399/0",
                                                      size=16, cloning_id=399)),
                     [], image_rename(400))


def test_snap_revert_faults(fenv):
    env = fenv
    src = raw_file(env.lab.workdir / "images" / "r.raw", 16)

    def prepare(i):
        img = Image(500 + i, "r", IMAGE_DS, path=str(src), size=16)
        assert ds(env, "cp", img).ok
        with env.lab.client() as c:
            c.snapshot_create(None, f"one-image-{500 + i}", "snapshot-0")
            c.snapshot_create(None, f"one-image-{500 + i}", "snapshot-1")
            c.resource_make_available("node1", f"one-image-{500 + i}")
        env.lab.write_device("node1", f"/dev/drbd/by-res/one-image-{500 + i}/0", b"N" * 4096)
        with env.lab.client() as c:
            c.resource_delete("node1", f"one-image-{500 + i}")

    def action(i):
        img = Image(500 + i, "r", IMAGE_DS, source=f"/dev/drbd/by-res/one-image-{500 + i}/0", size=16,
                    target_snapshot=0)
        return ds(env, "snap_revert", img)

    run_fault_matrix(env, prepare, action, ["dd"], image_rename(500))
