"""The emulator's data plane: what DRBD and the storage pools would hold.

Each volume of a resource definition is one sparse backing file: replication means every node sees
the same bytes, so one file serves all replicas. A snapshot is a sparse copy of that file taken at
that moment; restore and rollback copy bytes back *into the same inode* (loop devices keep the old
inode open), zero ranges included.

When the lab gives a node a device directory (the directory that is bind-mounted over /dev inside
that simulated host), each resource on that node gets its own loop device over the backing file
and the node sees `/dev/drbd<minor>` plus the udev link `/dev/drbd/by-res/<rsc>/<vol>` (or, for a
layer stack without DRBD, the storage device `/dev/<vg>/<rsc>_<vol>`). Nothing appears on a node
that has no resource there. One loop device per node also tells us which node holds a device open:
that is DRBD's "in use" (Primary).
"""
from __future__ import annotations

import fcntl
import os
import shutil
import stat
import struct
import subprocess
import zlib
from pathlib import Path
from typing import Optional

BLKFLSBUF = 0x1261          # flush and drop a block device's buffer cache
CHUNK = 1 << 20


def sparse_copy(src: Path, dst_fd: int, size: int) -> None:
    """Copy src into an open fd as a sparse image: holes stay holes, stale bytes are cleared."""
    os.ftruncate(dst_fd, 0)
    with open(src, "rb") as f:
        sfd = f.fileno()
        src_size = os.fstat(sfd).st_size
        pos = 0
        while pos < src_size:
            try:
                data_at = os.lseek(sfd, pos, os.SEEK_DATA)
            except OSError:          # ENXIO: only a hole is left
                break
            hole_at = os.lseek(sfd, data_at, os.SEEK_HOLE)
            off = data_at
            zero = bytes(CHUNK)
            while off < hole_at:
                n = min(CHUNK, hole_at - off)
                buf = os.pread(sfd, n, off)
                # (a compare stops at the first byte of data; bytes.count reads the whole buffer)
                if buf != (zero if n == CHUNK else zero[:n]):
                    os.pwrite(dst_fd, buf, off)
                off += n
            pos = hole_at
    os.ftruncate(dst_fd, size)
    os.fsync(dst_fd)


THIN_MAP_MAGIC = b"LABTHIN1"


def write_thin_map(image: Path, chunk_kib: int) -> None:
    """`<image>.map`: what an LVM thin snapshot of these bytes would map, chunk by chunk, for the
    lab's thin pool stand-in (lab/thin_standin.py): 0 for a chunk that reads as zeros (unmapped),
    else a 64-bit key of the chunk's place and content (equal keys: the same data block, which
    snapshots share until one of them is written). Header: magic, chunk size in KiB, chunk count."""
    chunk = chunk_kib << 10
    size = os.path.getsize(image)
    count = (size + chunk - 1) // chunk
    keys = bytearray(8 * count)
    zero = bytes(chunk)
    with open(image, "rb") as f:
        fd = f.fileno()
        pos = 0
        while pos < size:
            try:
                data_at = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:
                break
            hole_at = os.lseek(fd, data_at, os.SEEK_HOLE)
            index = data_at // chunk
            while index * chunk < hole_at:
                buf = os.pread(fd, chunk, index * chunk)
                if buf != zero[:len(buf)]:
                    key = (zlib.crc32(buf) << 32 | zlib.adler32(buf)) ^ (index * 0x9E3779B97F4A7C15 & (2 ** 64 - 1))
                    struct.pack_into("<Q", keys, 8 * index, key or 1)
                index += 1
            pos = max(hole_at, index * chunk)
    with open(str(image) + ".map", "wb") as out:
        out.write(THIN_MAP_MAGIC + struct.pack("<II", chunk_kib, count) + bytes(keys))


class DataPlane:
    def __init__(self, root: Path, host_devdirs: dict[str, str]):
        self.root = Path(root)
        self._root = str(self.root)
        # node name (upper case) -> directory that is /dev on that simulated host
        self.devdirs = {k.upper(): Path(v) for k, v in host_devdirs.items()}
        (self.root / "volumes").mkdir(parents=True, exist_ok=True)
        (self.root / "snapshots").mkdir(parents=True, exist_ok=True)

    # ---- files -------------------------------------------------------------------------------
    def volume_file(self, rsc: str, vnr: int) -> Path:
        return self.root / "volumes" / rsc.upper() / f"{vnr}.img"

    def snapshot_file(self, rsc: str, snap: str, vnr: int) -> Path:
        return self.root / "snapshots" / rsc.upper() / snap.upper() / f"{vnr}.img"

    def create_volume(self, rsc: str, vnr: int, size_kib: int) -> None:
        path = self.volume_file(rsc, vnr)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            f.truncate(size_kib * 1024)

    def has_volume(self, rsc: str, vnr: int) -> bool:
        return self.volume_file(rsc, vnr).exists()

    def delete_volume(self, rsc: str, vnr: int) -> None:
        path = self.volume_file(rsc, vnr)
        path.unlink(missing_ok=True)
        try:
            path.parent.rmdir()
        except OSError:
            pass

    def allocated_kib(self, rsc: str, vnr: int) -> int:
        # plain strings, not Path: listings of thousands of volumes call this for each
        try:
            return os.stat(os.path.join(self._root, "volumes", rsc.upper(), f"{vnr}.img")).st_blocks // 2
        except FileNotFoundError:
            return 0

    def snapshot_allocated_kib(self, rsc: str, snap: str, vnr: int) -> int:
        try:
            return os.stat(os.path.join(self._root, "snapshots", rsc.upper(), snap.upper(),
                                        f"{vnr}.img")).st_blocks // 2
        except FileNotFoundError:
            return 0

    def grow(self, rsc: str, vnr: int, size_kib: int, loops: list[str]) -> None:
        path = self.volume_file(rsc, vnr)
        if path.exists():
            with open(path, "r+b") as f:
                f.truncate(size_kib * 1024)
        for loop in loops:
            subprocess.run(["losetup", "-c", loop], check=True)

    def take_snapshot(self, rsc: str, vnr: int, snap: str, size_kib: int, loops: list[str],
                      thin_chunk_kib: int = 64) -> None:
        self.flush(loops)
        dst = self.snapshot_file(rsc, snap, vnr)
        dst.parent.mkdir(parents=True, exist_ok=True)
        src = self.volume_file(rsc, vnr)
        with open(dst, "wb") as f:
            if src.exists():
                sparse_copy(src, f.fileno(), size_kib * 1024)
            else:
                f.truncate(size_kib * 1024)
        write_thin_map(dst, thin_chunk_kib)

    def delete_snapshot(self, rsc: str, snap: str) -> None:
        shutil.rmtree(self.root / "snapshots" / rsc.upper() / snap.upper(), ignore_errors=True)
        try:
            (self.root / "snapshots" / rsc.upper()).rmdir()
        except OSError:
            pass

    def fill_from(self, src: Path, rsc: str, vnr: int, size_kib: int, loops: list[str]) -> None:
        """Overwrite a volume with src's bytes (restore, rollback, clone)."""
        dst = self.volume_file(rsc, vnr)
        dst.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(dst, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            sparse_copy(src, fd, size_kib * 1024)
        finally:
            os.close(fd)
        self.flush(loops)

    @staticmethod
    def flush(loops: list[str]) -> None:
        for loop in loops:
            try:
                fd = os.open(loop, os.O_RDONLY)
            except OSError:
                continue
            try:
                fcntl.ioctl(fd, BLKFLSBUF, 0)
            except OSError:
                pass
            finally:
                os.close(fd)

    # ---- devices on hosts --------------------------------------------------------------------
    def has_devices(self, node: str) -> bool:
        return node.upper() in self.devdirs

    def attach(self, node: str, rsc: str, vnr: int, device_path: str,
               links: list[str]) -> Optional[str]:
        """Give `node` a device for the volume; returns the loop device used, if any."""
        devdir = self.devdirs.get(node.upper())
        if devdir is None:
            return None
        path = self.volume_file(rsc, vnr)
        if not path.exists():
            return None
        loop = subprocess.run(["losetup", "-f", "--show", str(path)], check=True,
                              capture_output=True, text=True).stdout.strip()
        rdev = os.stat(loop).st_rdev
        self._mknod(devdir, device_path, rdev)
        for link in links:
            self._symlink(devdir, link, device_path)
        return loop

    def detach(self, node: str, loop: Optional[str], device_path: str, links: list[str]) -> None:
        devdir = self.devdirs.get(node.upper())
        if devdir is not None:
            for link in links:
                self._remove(devdir, link)
            self._remove(devdir, device_path)
        if loop:
            subprocess.run(["losetup", "-d", loop], capture_output=True)

    def loop_in_use(self, loop: Optional[str]) -> bool:
        """True if any process holds the loop device (i.e. the node's DRBD device) open."""
        if not loop:
            return False
        try:
            rdev = os.stat(loop).st_rdev
        except OSError:
            return False
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            fddir = f"/proc/{pid}/fd"
            try:
                fds = os.listdir(fddir)
            except OSError:
                continue
            for fd in fds:
                try:
                    st = os.stat(f"{fddir}/{fd}")
                except OSError:
                    continue
                if stat.S_ISBLK(st.st_mode) and st.st_rdev == rdev:
                    return True
        return False

    @staticmethod
    def loop_backing_file(loop: str) -> Optional[str]:
        name = os.path.basename(loop)
        try:
            return Path(f"/sys/block/{name}/loop/backing_file").read_text().strip()
        except OSError:
            return None

    @staticmethod
    def _inside(devdir: Path, dev_path: str) -> Path:
        rel = os.path.relpath(os.path.normpath(dev_path), "/dev")
        if rel.startswith(".."):
            raise ValueError(f"device path outside /dev: {dev_path}")
        return devdir / rel

    def _mknod(self, devdir: Path, dev_path: str, rdev: int) -> None:
        target = self._inside(devdir, dev_path)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists() or target.is_symlink():
            target.unlink()
        os.mknod(target, 0o660 | stat.S_IFBLK, rdev)
        shutil.chown(target, "root", "disk")

    def _symlink(self, devdir: Path, link: str, dev_path: str) -> None:
        target = self._inside(devdir, link)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists() or target.is_symlink():
            target.unlink()
        os.symlink(dev_path, target)

    def _remove(self, devdir: Path, dev_path: str) -> None:
        target = self._inside(devdir, dev_path)
        if target.exists() or target.is_symlink():
            target.unlink()
        # prune now-empty directories (by-res/<rsc>, <vg>) up to the devdir
        parent = target.parent
        while parent != devdir and parent != devdir / "drbd" and parent != devdir / "drbd" / "by-res":
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent
