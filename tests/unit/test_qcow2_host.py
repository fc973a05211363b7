"""The one-pass qcow2 importer (lib/linstor_un/qcow2_host.py): fed a qcow2 on stdin, it leaves on
the target exactly what `qemu-img convert -O raw` makes of the image — for the layouts qemu-img
writes (plain, compressed, v2, small and large clusters, zero clusters) and for one whose tables
come after their data (lib/linstor_un/backup_host.py's writer)."""
from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

PROGRAM = (Path(__file__).resolve().parents[2] / "lib" / "linstor_un" / "qcow2_host.py").read_text()
BACKUP = (Path(__file__).resolve().parents[2] / "lib" / "linstor_un" / "backup_host.py").read_text()
MiB = 1 << 20

pytestmark = pytest.mark.skipif(subprocess.run(["which", "qemu-img"], capture_output=True).returncode != 0,
                                reason="needs qemu-img")


def disk_image(path: Path, size: int = 24 * MiB, seed: int = 1) -> bytes:
    """Random data in scattered places, compressible text, a zeroed area inside data, a hole, the last bytes."""
    rnd = random.Random(seed)
    buf = bytearray(size)
    for _ in range(30):
        at, n = rnd.randrange(0, size - 200_000), rnd.randrange(1, 200_000)
        buf[at:at + n] = rnd.randbytes(n)
    buf[3 * MiB:5 * MiB] = (b"linstor_un " * 200_000)[:2 * MiB]
    buf[4 * MiB:4 * MiB + 70_000] = bytes(70_000)
    buf[-4096:] = rnd.randbytes(4096)
    path.write_bytes(bytes(buf))
    return bytes(buf)


def qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


def imported(image: Path, target: Path, size: int, thin: bool) -> dict:
    # a thick target holds old bytes where the image has none; a thin one reads zeros
    target.write_bytes(bytes(size) if thin else b"\xa5" * size)
    with open(image, "rb") as f:
        done = subprocess.run([sys.executable, "-c", PROGRAM, str(target), str(target.parent), "1" if thin else "0"],
                              stdin=f, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stderr.strip().splitlines()[-1])


@pytest.mark.parametrize("options", [
    ["-O", "qcow2"],
    ["-O", "qcow2", "-c"],
    ["-O", "qcow2", "-o", "compat=0.10"],
    ["-O", "qcow2", "-o", "cluster_size=4096"],
    ["-O", "qcow2", "-o", "cluster_size=2M", "-c"],
    ["-O", "qcow2", "-o", "preallocation=metadata"],
], ids=["plain", "compressed", "v2", "4k-clusters", "2M-compressed", "prealloc-metadata"])
@pytest.mark.parametrize("thin", [True, False], ids=["thin", "thick"])
def test_an_import_equals_qemu_img_convert(tmp_path, options, thin):
    raw = tmp_path / "disk.raw"
    data = disk_image(raw)
    image = tmp_path / "disk.qcow2"
    qemu_img("convert", "-f", "raw", *options, str(raw), str(image))
    target = tmp_path / "target"
    counts = imported(image, target, len(data), thin)
    assert target.read_bytes() == data
    # streamed: what is kept is the few metadata clusters (refcounts) no table maps
    assert counts["spilled"] == 0 and counts["kept_in_memory"] <= 2 * 2 * MiB, counts


def test_zero_clusters_over_a_thick_target_read_zeros(tmp_path):
    image = tmp_path / "z.qcow2"
    qemu_img("create", "-f", "qcow2", str(image), "8M")
    subprocess.run(["qemu-io", "-c", "write -P 0x61 0 8M", "-c", "write -z 1M 2M", str(image)], check=True,
                   capture_output=True)
    target = tmp_path / "target"
    imported(image, target, 8 * MiB, thin=False)
    expect = b"a" * MiB + bytes(2 * MiB) + b"a" * (5 * MiB)
    assert target.read_bytes() == expect


def test_tables_after_their_data_are_kept_until_they_come(tmp_path):
    raw = tmp_path / "disk.raw"
    data = disk_image(raw, seed=7)
    image = tmp_path / "late.qcow2"
    done = subprocess.run([sys.executable, "-c", BACKUP, "full", str(raw), str(image), "65536"],
                          stdin=subprocess.DEVNULL, capture_output=True)
    assert done.returncode == 0, done.stderr
    target = tmp_path / "target"
    counts = imported(image, target, len(data), thin=False)
    assert target.read_bytes() == data
    assert counts["kept_in_memory"] + counts["spilled"] > 0, counts


@pytest.mark.parametrize("kind", ["backing", "luks"])
def test_what_it_cannot_stream_is_refused_before_writing(tmp_path, kind):
    image = tmp_path / "x.qcow2"
    if kind == "backing":
        base = tmp_path / "base.qcow2"
        qemu_img("create", "-f", "qcow2", str(base), "4M")
        qemu_img("create", "-f", "qcow2", "-b", str(base), "-F", "qcow2", str(image))
    else:
        # qemu-img times its key derivation by CPU use and gives up now and then on a VM ("Unable
        # to get accurate CPU usage"): a few tries
        for attempt in range(5):
            try:
                qemu_img("create", "-f", "qcow2", "--object", "secret,id=s0,data=pw", "-o",
                         "encrypt.format=luks,encrypt.key-secret=s0", str(image), "4M")
                break
            except subprocess.CalledProcessError:
                if attempt == 4:
                    raise
    target = tmp_path / "target"
    target.write_bytes(b"\xa5" * 4 * MiB)
    with open(image, "rb") as f:
        done = subprocess.run([sys.executable, "-c", PROGRAM, str(target), str(tmp_path), "0"], stdin=f,
                              capture_output=True, text=True)
    assert done.returncode == 3 and "unsupported qcow2" in done.stderr, done.stderr
    assert target.read_bytes() == b"\xa5" * 4 * MiB


def test_a_truncated_image_is_an_error(tmp_path):
    raw = tmp_path / "disk.raw"
    disk_image(raw)
    image = tmp_path / "disk.qcow2"
    qemu_img("convert", "-f", "raw", "-O", "qcow2", str(raw), str(image))
    cut = tmp_path / "cut.qcow2"
    cut.write_bytes(image.read_bytes()[: image.stat().st_size // 2])
    target = tmp_path / "target"
    target.write_bytes(bytes(24 * MiB))
    with open(cut, "rb") as f:
        done = subprocess.run([sys.executable, "-c", PROGRAM, str(target), str(tmp_path), "1"], stdin=f,
                              capture_output=True, text=True)
    assert done.returncode == 1 and "ended before" in done.stderr, done.stderr


def test_a_host_without_python3_stages_and_converts_in_the_same_command(tmp_path):
    """image_source._QCOW2_ON_HOST: with no python3 on the bridge, the stream is staged and qemu-img converts it."""
    import shutil
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "lib"))
    from linstor_un.image_source import _QCOW2_ON_HOST
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("sh", "cat", "mkdir", "rm", "qemu-img"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    raw = tmp_path / "disk.raw"
    data = disk_image(raw, size=8 * MiB)
    image = tmp_path / "disk.qcow2"
    qemu_img("convert", "-f", "raw", "-O", "qcow2", str(raw), str(image))
    target, staging = tmp_path / "target", tmp_path / "staging"
    target.write_bytes(b"\xa5" * len(data))
    with open(image, "rb") as f:
        done = subprocess.run([str(bin_dir / "sh"), "-c", _QCOW2_ON_HOST, "import", PROGRAM, str(target), str(staging),
                               "0", ""], stdin=f, capture_output=True, env={"PATH": str(bin_dir)})
    assert done.returncode == 0, done.stderr
    assert target.read_bytes() == data
    assert list(staging.iterdir()) == []
