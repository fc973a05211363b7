"""The program a backup runs on the host (lib/linstor_un/backup_host.py), on plain files: the qcow2
it writes is valid, and a chain of its increments gives back the disk at each backup exactly."""
from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

PROGRAM = (Path(__file__).resolve().parents[2] / "lib" / "linstor_un" / "backup_host.py").read_text()
MiB = 1 << 20
pytestmark = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img")


def backup(mode, device, out, previous=b"", base=None):
    args = [sys.executable, "-c", PROGRAM, mode, str(device), str(out), "65536"] + ([str(base)] if base else [])
    done = subprocess.run(args, input=previous, capture_output=True)
    assert done.returncode == 0, done.stderr
    check = subprocess.run(["qemu-img", "check", str(out)], capture_output=True, text=True)
    assert check.returncode == 0 and "No errors" in check.stdout, check.stdout + check.stderr
    return done.stdout


def chain(files, work):
    for backing, top in zip(files, files[1:]):
        subprocess.run(["qemu-img", "rebase", "-u", "-F", "qcow2", "-b", str(backing), str(top)], check=True)
    raw = work / "restored.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(files[-1]), str(raw)], check=True)
    return raw.read_bytes()


def test_full_then_increments_rebuild_every_state(tmp_path):
    disk = tmp_path / "disk"
    rnd = random.Random(7)
    with open(disk, "wb") as f:
        f.truncate(20 * MiB)
        for _ in range(30):
            f.seek(rnd.randrange(0, 20 * MiB - 9000))
            f.write(os.urandom(9000))
    states, files = [disk.read_bytes()], [tmp_path / "d.0"]
    digests = backup("full", disk, files[0])
    assert files[0].stat().st_size < 4 * MiB                     # the zeros are not in it
    for step in range(1, 4):
        with open(disk, "r+b") as f:
            if step == 1:
                f.seek(20 * MiB - 100)
                f.write(b"E" * 100)                              # the very end
                f.seek(3 * MiB)
                f.write(bytes(2 * MiB))                          # data became zeros
            elif step == 2:
                f.truncate(23 * MiB + 512)                       # grown, not a cluster multiple
                f.seek(22 * MiB)
                f.write(os.urandom(MiB + 512))
            else:
                for _ in range(5):
                    f.seek(rnd.randrange(0, 23 * MiB))
                    f.write(os.urandom(4096))
        states.append(disk.read_bytes())
        files.append(tmp_path / f"d.{step}")
        digests = backup("increment", disk, files[-1], digests)
    assert files[3].stat().st_size < 5 * 65536 + 6 * 65536       # 5 changed clusters + metadata
    for n in range(4):
        work = tmp_path / f"w{n}"
        work.mkdir()
        copies = []
        for i in range(n + 1):
            copies.append(work / f"d.{i}")
            shutil.copyfile(files[i], copies[-1])
        assert chain(copies, work) == states[n], n


def test_without_digests_the_base_device_is_compared(tmp_path):
    base, disk = tmp_path / "base", tmp_path / "disk"
    data = os.urandom(4 * MiB)
    base.write_bytes(data)
    changed = bytearray(data)
    changed[MiB:MiB + 10] = b"x" * 10
    disk.write_bytes(bytes(changed))
    backup("full", base, tmp_path / "d.0")
    backup("increment", disk, tmp_path / "d.1", b"", base)
    # one cluster changed: the rest reads through to the full backup
    info = subprocess.run(["qemu-img", "map", "--output=json", str(tmp_path / "d.1")], capture_output=True, text=True)
    assert info.stdout.count('"data": true') == 1, info.stdout
    assert chain([tmp_path / "d.0", tmp_path / "d.1"], tmp_path) == bytes(changed)


def test_a_reader_whose_driver_went_away_stops_and_leaves_no_file(tmp_path):
    disk = tmp_path / "disk"
    with open(disk, "wb") as f:
        f.truncate(4096 * MiB)
    out = tmp_path / "d.0"
    proc = subprocess.Popen([sys.executable, "-c", PROGRAM, "full", str(disk), str(out), "65536"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(0.3)
    proc.stdout.close()                                          # the SSH session is gone
    started = time.monotonic()
    rc = proc.wait(30)
    assert rc != 0 and b"abandoned" in proc.stderr.read()
    assert time.monotonic() - started < 5
    assert not out.exists() and not list(tmp_path.glob("d.0.part.*"))


def test_a_full_directory_is_one_line_naming_the_file(tmp_path):
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root for a small tmpfs")
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)], check=True)
    try:
        disk = tmp_path / "disk"
        disk.write_bytes(os.urandom(4 * MiB))
        done = subprocess.run([sys.executable, "-c", PROGRAM, "full", str(disk), str(small / "d.0"), "65536"],
                              capture_output=True)        # (stdout: the digests, written as they come)
        stderr = done.stderr.decode()
        assert done.returncode == 1
        assert stderr.strip().count("\n") == 0 and "No space left" in stderr, stderr
        assert str(small / "d.0") in stderr
        assert os.listdir(small) == []
    finally:
        subprocess.run(["umount", str(small)])
