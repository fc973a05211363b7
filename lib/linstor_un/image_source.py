"""Image sources on the front-end and their way onto a volume: where a path may be read from
(RESTRICTED_DIRS / SAFE_DIRS), the format (sniffed from the head), the stream (decompressed, hashed,
rate-limited, a local file by sendfile), its size, and the one remote command that writes it
(qcow2 converted on the host as it arrives, or staged and converted with qemu-img)."""
from __future__ import annotations

import base64
import bz2
import hashlib
import lzma
import os
import signal
import stat
import struct
import subprocess
import tempfile
import threading
import time
import urllib.request
import uuid
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Optional, Protocol

from . import downloads
from .errors import DriverError
from .validate import natural
from .remote import Host, Shell

if TYPE_CHECKING:
    from .settings import ImportSettings

QCOW2_MAGIC = b"QFI\xfb"
VMDK_MAGIC = b"KDMV"
VHDX_MAGIC = b"vhdxfile"
VDI_MAGIC_AT_64 = b"\x7f\x10\xda\xbe"
CHUNK = 4 << 20


def restricted(path: str, imports: "ImportSettings", home: str) -> bool:
    """OpenNebula's check_restricted: inside RESTRICTED_DIRS (plus oned's own dirs) and not in SAFE_DIRS."""
    real = os.path.realpath(path)
    dirs = ["/var/lib/one/", "/etc/one/", home.rstrip("/") + "/"] + list(imports.restricted_dirs)
    safe = imports.safe_dirs

    def under(d: str) -> bool:
        d = os.path.realpath(d)
        return real == d or real.startswith(d.rstrip("/") + "/")

    return any(under(d) for d in dirs if d) and not any(under(d) for d in safe if d)


def sniff(head: bytes) -> str:
    if head.startswith(QCOW2_MAGIC):
        return "qcow2"
    if head.startswith(VMDK_MAGIC):
        return "vmdk"
    if head.startswith(VHDX_MAGIC):
        return "vhdx"
    if head[64:68] == VDI_MAGIC_AT_64:
        return "vdi"
    return "raw"


def qcow2_virtual_size(head: bytes) -> Optional[int]:
    if head.startswith(QCOW2_MAGIC) and len(head) >= 32:
        return struct.unpack(">Q", head[24:32])[0]
    return None



class Decompressor(Protocol):
    """zlib's, bz2's and lzma's decompressors alike."""

    def decompress(self, data: bytes) -> bytes: ...

class Source:
    """An image source read as a stream: decompressed (unless NO_DECOMPRESS), hashed (MD5/SHA1 of
    the bytes as downloaded, as OpenNebula's downloader checks them), optionally rate-limited."""

    def __init__(self, url: str, no_decompress: bool = False, limit_bps: int = 0, timeout: float = 60,
                 md5: bool = True, sha1: bool = True, keep: Optional[downloads.Keeper] = None):
        self.url = url
        self.keep = keep                # every byte read is also written there (stat keeps it for cp)
        # hashing costs CPU on every byte: only the sums the image asks to check
        self.md5 = hashlib.md5() if md5 else None
        self.sha1 = hashlib.sha1() if sha1 else None
        self.limit = limit_bps
        self.started = time.monotonic()
        self.raw_bytes = 0
        self._eof = False
        self.length: Optional[int] = None
        kept = downloads.lookup(url) if url.startswith(("http://", "https://")) and keep is None else None
        self.from_kept = kept is not None
        self._raw: BinaryIO
        try:
            if kept is not None:
                self._raw = open(kept, "rb")
                self.length = os.fstat(self._raw.fileno()).st_size
            elif url.startswith(("http://", "https://")):
                resp = urllib.request.urlopen(url, timeout=timeout)
                length = resp.headers.get("Content-Length")
                self.length = natural(length or "")
                self._raw = resp
            else:
                self._raw = open(url, "rb")
                self.length = os.fstat(self._raw.fileno()).st_size
        except OSError as err:
            raise DriverError(f"cannot read image {url}: {err}")
        first = self._read_raw(CHUNK)
        self._decoder: Optional[Decompressor] = None
        if not no_decompress:
            if first.startswith(b"\x1f\x8b"):
                self._decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
            elif first.startswith(b"BZh"):
                self._decoder = bz2.BZ2Decompressor()
            elif first.startswith(b"\xfd7zXZ\x00"):
                self._decoder = lzma.LZMADecompressor()
        self.compressed = self._decoder is not None
        self._pending = self._decode(first)
        while len(self._pending) < 65536 and not self._eof:
            self._pending += self._decode(self._read_raw(CHUNK))
        self.head = self._pending[:65536]
        self.format = sniff(self.head)

    def _read_raw(self, n: int) -> bytes:
        try:
            data = self._raw.read(n)
        except OSError as err:
            raise DriverError(f"reading image {self.url} failed: {err}")
        if not data:
            self._eof = True
            return b""
        if self.keep is not None:
            self.keep.file.write(data)
        if self.md5 is not None:
            self.md5.update(data)
        if self.sha1 is not None:
            self.sha1.update(data)
        self.raw_bytes += len(data)
        if self.limit:
            ahead = self.raw_bytes / self.limit - (time.monotonic() - self.started)
            if ahead > 0:
                time.sleep(ahead)
        return data

    def _decode(self, data: bytes) -> bytes:
        if self._decoder is None or not data:
            return data
        try:
            return self._decoder.decompress(data)
        except (OSError, EOFError, zlib.error, lzma.LZMAError) as err:
            raise DriverError(f"cannot decompress {self.url}: {err}")

    def read(self, n: int = CHUNK) -> bytes:
        while not self._pending and not self._eof:
            self._pending = self._decode(self._read_raw(n))
        if len(self._pending) <= n:         # (no slicing: a copy of every chunk)
            out, self._pending = self._pending, b""
        else:
            out, self._pending = self._pending[:n], self._pending[n:]
        return out

    def passthrough(self) -> Optional[int]:
        """The file descriptor the rest of the bytes can be sent from as they are (the kernel
        copies them: os.sendfile), once read() has given what it holds: a local file read with
        nothing to compute on the way (no decompression, sums, rate limit or copy kept)."""
        plain = (self._decoder is None and self.md5 is None and self.sha1 is None and not self.limit
                 and self.keep is None and not self._pending and not self.url.startswith(("http://", "https://")))
        if not plain:
            return None
        try:
            fd = self._raw.fileno()
            return fd if stat.S_ISREG(os.fstat(fd).st_mode) else None
        except (OSError, AttributeError, ValueError):
            return None

    def verify(self, md5: str, sha1: str) -> None:
        if md5 and self.md5 is not None and self.md5.hexdigest() != md5.lower():
            raise DriverError(f"MD5 of {self.url} is {self.md5.hexdigest()}, expected {md5}")
        if sha1 and self.sha1 is not None and self.sha1.hexdigest() != sha1.lower():
            raise DriverError(f"SHA1 of {self.url} is {self.sha1.hexdigest()}, expected {sha1}")

    def close(self) -> None:
        try:
            self._raw.close()
        except OSError:
            pass


def uncompressed_size(path: str) -> Optional[int]:
    """Bytes of a local image after decompression (gzip's trailer; a full read for bz2/xz)."""
    with open(path, "rb") as f:
        head = f.read(6)
        if head.startswith(b"\x1f\x8b"):
            f.seek(-4, os.SEEK_END)
            return struct.unpack("<I", f.read(4))[0]
    if head.startswith((b"BZh", b"\xfd7zXZ")):
        opener = bz2.open if head.startswith(b"BZh") else lzma.open
        total = 0
        with opener(path, "rb") as g:
            while True:
                block = g.read(CHUNK)
                if not block:
                    return total
                total += len(block)
    return None


def image_size_bytes(url: str, no_decompress: bool = False) -> int:
    """Virtual size of an image source (what the volume must hold). A compressed raw image over
    http(s) is read whole to know it: what was downloaded is kept for DS cp (downloads.py)."""
    remote = url.startswith(("http://", "https://"))
    keeper = downloads.Keeper(url) if remote and downloads.lookup(url) is None else None
    try:
        src = Source(url, no_decompress, md5=False, sha1=False, keep=keeper)
    except BaseException:
        if keeper:
            keeper.discard()
        raise
    if keeper is not None:
        if src.compressed and not qcow2_virtual_size(src.head) and src.format == "raw":
            try:
                measured = _count(src)
            except BaseException:
                src.close()
                keeper.discard()
                raise
            src.close()
            keeper.done()
            return measured
        src.keep = None                 # its head tells the size: nothing to keep
        keeper.discard()
    try:
        virtual = qcow2_virtual_size(src.head)
        if virtual:
            return virtual
        if src.format != "raw":
            raise DriverError(f"{url}: {src.format} images need STAGING on a host to be measured")
        if not src.compressed and src.length is not None:
            return src.length
        if not url.startswith(("http://", "https://")):
            size = uncompressed_size(url)
            if size is not None:
                return size
        return _count(src)
    finally:
        src.close()


def _count(src: "Source") -> int:
    total = 0
    while True:
        block = src.read()
        if not block:
            return total
        total += len(block)


QCOW2_PROGRAM = Path(__file__).with_name("qcow2_host.py")
# on the bridge: the one-pass importer when the host has python3, else the image staged in
# STAGING_DIR and converted by qemu-img (one command either way: the stream is read once)
_QCOW2_ON_HOST = ('if command -v python3 >/dev/null 2>&1; then exec python3 -c "$1" "$2" "$3" "$4"; fi; '
                  'mkdir -p "$3" && t="$3/linstor_un-import-$$" && cat >"$t" && '
                  'qemu-img convert -q -n -O raw -t none $5 "$t" "$2"; rc=$?; rm -f "$t"; exit $rc')


def streamable_qcow2(src: "Source") -> bool:
    """A qcow2 the host can import in one pass (no backing file, encryption, external data or zstd)."""
    from .qcow2_host import Header, Unsupported
    try:
        Header(src.head)
    except (Unsupported, struct.error):
        return False
    return True


def write(host: Host, src: "Source", device: str, staging: str, thin: bool, md5: str = "", sha1: str = "",
          limit: Optional[float] = None) -> None:
    """An image stream onto a device on host, read once: raw straight through dd; qcow2 through the
    one-pass importer (qcow2_host.py); anything else staged in STAGING_DIR (qemu-img cannot read
    qcow2 & co. from a pipe) and converted to raw there. `limit`: seconds each step may take
    (None: as long as the data need)."""
    bulk: dict = {"timeout": limit} if limit else {"bulk": True}
    if src.format == "raw":
        host.run(["dd", f"of={device}", "bs=4M", "iflag=fullblock", "oflag=direct",
                  "conv=sparse,fsync" if thin else "conv=fsync", "status=none"],
                 f"write {src.url} to {device}", stdin=src, **bulk)
        src.verify(md5, sha1)
        return
    if src.format == "qcow2" and streamable_qcow2(src):
        host.run(["sh", "-c", _QCOW2_ON_HOST, "import", QCOW2_PROGRAM.read_text(), device, staging,
                  "1" if thin else "0", "--target-is-zero" if thin else ""],
                 f"write {src.url} to {device} (qcow2, one pass)", stdin=src, **bulk)
        src.verify(md5, sha1)
        return
    tmp = os.path.join(staging, f"linstor_un-import-{uuid.uuid4().hex}")
    try:
        host.run(Shell.join(["mkdir", "-p", staging], "&&", ["cat"], ">", [tmp]), f"stage the image in {tmp}",
                 stdin=src, **bulk)
        src.verify(md5, sha1)
        args = ["qemu-img", "convert", "-q", "-n", "-O", "raw", "-t", "none"]
        if thin:
            args.append("--target-is-zero")
        host.run(args + [tmp, device], f"convert the image to raw on {device}", **bulk)
    finally:
        host.run(["rm", "-f", tmp], "remove the staging file", check=False)


DOWNLOAD_STALL = 300                # seconds a download may go without a byte before it is stopped


def download(remotes: Path, url: str, drv_action: str = "") -> str:
    """A URL OpenNebula's downloader.sh understands (rsync://, restic://, s3://...) fetched into a
    local temporary file, as it is (no decompression); returns its path: the caller removes it."""
    downloader = remotes / "datastore" / "downloader.sh"
    if not os.access(downloader, os.X_OK):
        raise DriverError(f"cannot read {url.split('://')[0]}:// sources: OpenNebula's "
                          f"datastore/downloader.sh is not installed")
    fd, tmp = tempfile.mkstemp(prefix="linstor_un-download-")
    os.close(fd)
    env = dict(os.environ)
    if drv_action:
        env["DRV_ACTION"] = base64.b64encode(drv_action.encode()).decode()
    # no limit on the whole (a backup may be terabytes), but on a download that stops moving
    proc = subprocess.Popen([str(downloader), "--nodecomp", url, tmp], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    err_chunks: list = []
    errors = proc.stderr
    reader = threading.Thread(target=lambda: err_chunks.append(errors.read() if errors else b""), daemon=True)
    reader.start()
    size, moved = -1, time.monotonic()
    try:
        while proc.poll() is None:
            try:
                now = os.path.getsize(tmp)
            except OSError:
                now = -1
            if now != size:
                size, moved = now, time.monotonic()
            elif time.monotonic() - moved > DOWNLOAD_STALL:
                raise DriverError(f"downloading {url}: nothing arrived for {DOWNLOAD_STALL} s (stopped)")
            time.sleep(1)
    except BaseException:                   # stalled, or this action stopped (SIGTERM): so does it
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        proc.wait()
        os.unlink(tmp)
        raise
    reader.join(5)
    if proc.returncode != 0:
        os.unlink(tmp)
        said = b"".join(err_chunks).decode(errors="replace").strip()
        raise DriverError(f"downloading {url} failed: {said}")
    return tmp
