"""A host's disk fills up during a copy: the import fails with a clear error and nothing stays."""
from __future__ import annotations

import subprocess

from lab.lab import IMAGE_DS
from lab.oned import Image, to_xml
from lab.runner import ds_action_data

from .conftest import NO_LEFTOVERS, leftovers, state


def test_disk_full_while_staging_an_import(renv, scenario):
    env = renv
    sc = scenario("disk full on the bridge host while a vmdk import is staged there",
                  "one-line error naming the host, the step and 'No space left'; no volume, no staging "
                  "file, state as before; the same import then succeeds with room")
    images = env.lab.workdir / "full-images"
    images.mkdir(exist_ok=True)
    raw = images / "big.raw"
    with open(raw, "wb") as f:
        f.write(__import__("os").urandom(8 << 20))              # incompressible: the vmdk is ~8 MiB
    # (qcow2 is imported in one pass, without staging: vmdk still goes through STAGING_DIR)
    qcow = images / "big.vmdk"
    subprocess.run(["qemu-img", "convert", "-O", "vmdk", str(raw), str(qcow)], check=True)
    host = env.lab.host("node2")
    host.run_inside("mkdir -p /var/tmp/one/small && mount -t tmpfs -o size=2m tmpfs /var/tmp/one/small")
    template = env.lab.oned.datastores[IMAGE_DS].template
    template.update(SAFE_DIRS=str(images), BRIDGE_LIST="node2", STAGING_DIR="/var/tmp/one/small")
    try:
        sc.run()
        before = state(env)
        data = ds_action_data(to_xml(Image(500, "big", IMAGE_DS, path=str(qcow), size=8).element()),
                              to_xml(env.lab.oned.datastores[IMAGE_DS].element()))
        result = env.r.ds("cp", data, 500)
        assert result.rc != 0
        errors = [ln for ln in result.stderr.strip().splitlines() if not ln.startswith("INFO")]
        assert len(errors) == 1, result.stderr
        assert "node2" in errors[0] and "stage the image" in errors[0] and "No space left" in errors[0], errors[0]
        assert state(env) == before
        assert host.run_inside("ls -A /var/tmp/one/small").stdout.strip() == b""
        assert leftovers(env) == NO_LEFTOVERS

        sc.run()
        template["STAGING_DIR"] = "/var/tmp/one"
        data = ds_action_data(to_xml(Image(500, "big", IMAGE_DS, path=str(qcow), size=8).element()),
                              to_xml(env.lab.oned.datastores[IMAGE_DS].element()))
        result = env.r.ds("cp", data, 500)
        assert result.ok, str(result)
        with env.lab.client() as c:
            c.resource_make_available("node2", "one-image-500")
        assert env.read("node2", "/dev/drbd/by-res/one-image-500/0", 0, 4096) == raw.read_bytes()[:4096]
    finally:
        host.run_inside("umount /var/tmp/one/small", check=False)
        for k in ("BRIDGE_LIST", "STAGING_DIR"):
            template.pop(k, None)
