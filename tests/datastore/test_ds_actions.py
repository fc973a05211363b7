"""DS actions through the oned runner: imports, datablocks, clones, removal, snapshots, monitor."""
from __future__ import annotations

import gzip
import hashlib
import http.server
import os
import subprocess
import threading
from pathlib import Path

import pytest
from lxml import etree

from lab.lab import IMAGE_DS
from lab.oned import Image, to_xml
from lab.runner import ds_action_data

from tests.tm.conftest import Env

PATTERN = os.urandom(4096)


def ds(env, action, image: Image, version=None, extra=""):
    runner = env.lab.runner(version) if version else env.r
    data = ds_action_data(to_xml(image.element()), to_xml(env.lab.oned.datastores[IMAGE_DS].element()), extra)
    return runner.ds(action, data, image.id)


def ok(result):
    assert result.ok, str(result)
    return result


def raw_file(path: Path, size_mb: int = 64) -> Path:
    with open(path, "wb") as f:
        f.truncate(size_mb << 20)
        f.write(PATTERN)
        f.seek(1 << 20)
        f.write(PATTERN)
    return path


def image_bytes(env, res: str, offset: int = 0, length: int = 4096) -> bytes:
    with env.lab.client() as c:
        c.resource_make_available("node1", res)
    return env.lab.read_device("node1", f"/dev/drbd/by-res/{res}/0", offset, length)


@pytest.fixture
def denv(lab):
    env = Env(lab)
    (lab.workdir / "images").mkdir()
    lab.oned.datastores[IMAGE_DS].template["SAFE_DIRS"] = str(lab.workdir / "images")
    return env


@pytest.fixture
def web(tmp_path):
    root = tmp_path / "www"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(root), **kw)

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_import_local_raw_and_qcow2(denv):
    env = denv
    src = raw_file(env.lab.workdir / "images" / "a.raw")
    size = ok(ds(env, "stat", Image(-1, "", IMAGE_DS, path=str(src)))).stdout.strip()
    assert size == "64"
    out = ok(ds(env, "cp", Image(1, "a", IMAGE_DS, path=str(src), size=64))).stdout
    assert out == "/dev/drbd/by-res/one-image-1/0 raw\n"
    assert image_bytes(env, "one-image-1") == PATTERN
    assert image_bytes(env, "one-image-1", 1 << 20) == PATTERN
    qcow = src.with_suffix(".qcow2")
    subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(src), str(qcow)], check=True)
    assert ok(ds(env, "stat", Image(-1, "", IMAGE_DS, path=str(qcow)))).stdout.strip() == "64"
    out = ok(ds(env, "cp", Image(2, "b", IMAGE_DS, path=str(qcow), size=1))).stdout
    assert out.split() == ["/dev/drbd/by-res/one-image-2/0", "raw"]
    assert image_bytes(env, "one-image-2", 1 << 20) == PATTERN
    with env.lab.client() as c:
        rd = c.resource_dfn_list_raise(filter_by_resource_definitions=["one-image-2"]).resource_definitions[0]
        assert rd.volume_definitions[0].size == 64 * 1024
    # no staging file is left on any host
    for host in env.lab.node_names:
        assert env.lab.host(host).run_inside("ls /var/tmp | grep -c linstor_un-import || true").stdout.strip() == b"0"
    # a compressed qcow2 (as cloud images are) in one pass too, over a thick volume's old bytes
    zq = src.with_suffix(".z.qcow2")
    subprocess.run(["qemu-img", "convert", "-c", "-O", "qcow2", str(src), str(zq)], check=True)
    out = ok(ds(env, "cp", Image(3, "c", IMAGE_DS, path=str(zq), size=64))).stdout
    assert image_bytes(env, "one-image-3") == PATTERN and image_bytes(env, "one-image-3", 1 << 20) == PATTERN


def test_import_gzip_over_http_with_checksum(denv, web):
    env = denv
    root, url = web
    src = raw_file(env.lab.workdir / "images" / "c.raw", 32)
    gz = root / "c.raw.gz"
    gz.write_bytes(gzip.compress(src.read_bytes()))
    md5 = hashlib.md5(gz.read_bytes()).hexdigest()
    assert ok(ds(env, "stat", Image(-1, "", IMAGE_DS, path=f"{url}/c.raw.gz"))).stdout.strip() == "32"
    img = Image(3, "c", IMAGE_DS, path=f"{url}/c.raw.gz", size=32, template={"MD5": md5})
    ok(ds(env, "cp", img))
    assert image_bytes(env, "one-image-3", 1 << 20) == PATTERN


def test_checksum_mismatch_leaves_nothing(denv, web):
    env = denv
    root, url = web
    raw_file(root / "d.raw", 16)
    before = set(env.rds())
    img = Image(4, "d", IMAGE_DS, path=f"{url}/d.raw", size=16, template={"MD5": "0" * 32})
    result = ds(env, "cp", img)
    assert result.rc != 0 and "MD5" in result.stderr and result.stdout == ""
    assert set(env.rds()) == before


def test_restricted_paths_are_refused(denv):
    env = denv
    result = ds(env, "cp", Image(5, "e", IMAGE_DS, path="/etc/passwd", size=1))
    assert result.rc != 0 and "Not allowed" in result.stderr
    assert "one-image-5" not in env.rds()


def test_mkfs_clone_snapshots_rm(denv):
    env = denv
    out = ok(ds(env, "mkfs", Image(6, "f", IMAGE_DS, format="raw", fs="ext4", size=64, type=2))).stdout
    assert out == "/dev/drbd/by-res/one-image-6/0\n"
    with env.lab.client() as c:
        c.resource_make_available("node1", "one-image-6")
    assert env.lab.host("node1").run_inside(
        "blkid -o value -s TYPE /dev/drbd/by-res/one-image-6/0").stdout.strip() == b"ext4"
    bad = ds(env, "mkfs", Image(7, "g", IMAGE_DS, format="raw", fs="ext4; touch /tmp/lab-pwned", size=8))
    assert bad.rc != 0 and "unsupported filesystem" in bad.stderr and "one-image-7" not in env.rds()
    assert not os.path.exists("/tmp/lab-pwned")

    src = raw_file(env.lab.workdir / "images" / "h.raw", 16)
    ok(ds(env, "cp", Image(8, "h", IMAGE_DS, path=str(src), size=16)))
    with env.lab.client() as c:
        c.resource_dfn_modify("one-image-8", {"Aux/one/VM_ID": "3"})
    out = ok(ds(env, "clone", Image(9, "h2", IMAGE_DS, path="/dev/drbd/by-res/one-image-8/0", size=32,
                                    cloning_id=8))).stdout
    assert out == "/dev/drbd/by-res/one-image-9/0\n"
    assert image_bytes(env, "one-image-9") == PATTERN
    assert "Aux/one/VM_ID" not in env.rds()["one-image-9"]

    # image snapshots: revert restores bytes, flatten keeps one content and drops all snapshots
    source = "/dev/drbd/by-res/one-image-8/0"
    with env.lab.client() as c:
        c.snapshot_create(None, "one-image-8", "snapshot-0")
        env.lab.write_device(next(r.node_name for r in c.resource_list_raise(filter_by_resources=["one-image-8"])
                                  .resources if "DISKLESS" not in r.flags), source, b"W" * 4096)
        c.snapshot_create(None, "one-image-8", "snapshot-1")
    img8 = Image(8, "h", IMAGE_DS, source=source, size=16, target_snapshot=0,
                 snapshots=[{"id": 0}, {"id": 1, "active": True}])
    ok(ds(env, "snap_revert", img8))
    assert image_bytes(env, "one-image-8") == PATTERN
    img8.target_snapshot = 1
    ok(ds(env, "snap_flatten", img8))
    assert image_bytes(env, "one-image-8") == b"W" * 4096
    with env.lab.client() as c:
        assert c.snapshot_dfn_list_raise(filter_by_resources=["one-image-8"]).snapshots == []
        c.snapshot_create(None, "one-image-8", "snapshot-2")
    img8.target_snapshot = 2
    ok(ds(env, "snap_delete", img8))
    ok(ds(env, "snap_delete", img8))                         # twice: still fine

    # rm: refused while a VM uses the image; then gone with its snapshots
    in_use = Image(8, "h", IMAGE_DS, source=source, size=16, vms=[3])
    result = ds(env, "rm", in_use)
    assert result.rc != 0 and "in use" in result.stderr
    with env.lab.client() as c:
        c.snapshot_create(None, "one-image-8", "snapshot-3")
    ok(ds(env, "rm", Image(8, "h", IMAGE_DS, source=source, size=16)))
    ok(ds(env, "rm", Image(8, "h", IMAGE_DS, source=source, size=16)))
    assert "one-image-8" not in env.rds()


def test_monitor_and_export(denv):
    env = denv
    mon = ok(ds(env, "monitor", Image(-1, "", IMAGE_DS))).stdout
    values = dict(line.split("=") for line in mon.split())
    assert int(values["TOTAL_MB"]) == 3 * 20 * 1024 // 2 and int(values["USED_MB"]) >= 0
    src = raw_file(env.lab.workdir / "images" / "x.raw", 8)
    ok(ds(env, "cp", Image(11, "x", IMAGE_DS, path=str(src), size=8)))
    data = ds_action_data(to_xml(Image(11, "x", IMAGE_DS, source="/dev/drbd/by-res/one-image-11/0",
                                       size=8).element()),
                          to_xml(env.lab.oned.datastores[IMAGE_DS].element()))
    out = ok(env.r._ds_style(env.lab.one_location / "var" / "remotes" / "datastore" / "linstor_un" / "export",
                             data, 0)).stdout
    info = etree.fromstring(out.encode())
    assert info.findtext("MD5") == hashlib.md5(src.read_bytes()).hexdigest()
    assert info.findtext("IMPORT_SOURCE").startswith("ssh://node")
    assert info.findtext("FORMAT") == "raw" and info.findtext("SIZE") == "8"


@pytest.mark.parametrize("version,stdin_option", [("5.12.0", False), ("6.6.2", True), ("6.8.0", False)])
def test_argv_conventions(denv, version, stdin_option):
    env = denv
    src = raw_file(env.lab.workdir / "images" / "v.raw", 8)
    runner = env.lab.runner(version, ds_stdin_option=stdin_option)
    data = ds_action_data(to_xml(Image(12, "v", IMAGE_DS, path=str(src), size=8).element()),
                          to_xml(env.lab.oned.datastores[IMAGE_DS].element()))
    out = ok(runner.ds("cp", data, 12)).stdout
    assert out == "/dev/drbd/by-res/one-image-12/0 raw\n"
    assert image_bytes(env, "one-image-12") == PATTERN


def test_a_compressed_http_image_is_downloaded_once(denv, tmp_path, monkeypatch):
    """stat must read a gzip'd raw image whole to know its size; cp then uses what stat fetched
    (it was downloaded twice). The bytes and the MD5 are still checked, and nothing is kept after."""
    env = denv
    root = tmp_path / "www2"
    root.mkdir()
    requests: list[str] = []

    class Counting(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(root), **kw)

        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Counting)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/e.raw.gz"
        src = raw_file(env.lab.workdir / "images" / "e.raw", 24)
        (root / "e.raw.gz").write_bytes(gzip.compress(src.read_bytes()))
        md5 = hashlib.md5((root / "e.raw.gz").read_bytes()).hexdigest()
        kept = tmp_path / "downloads"
        env.r.env["LINSTOR_UN_DOWNLOADS"] = str(kept)
        assert ok(ds(env, "stat", Image(-1, "", IMAGE_DS, path=url))).stdout.strip() == "24"
        ok(ds(env, "cp", Image(6, "e", IMAGE_DS, path=url, size=24, template={"MD5": md5})))
        assert requests == ["/e.raw.gz"]
        assert image_bytes(env, "one-image-6", 1 << 20) == PATTERN
        assert not [p for p in kept.iterdir()]                  # cp took it away
    finally:
        server.shutdown()
