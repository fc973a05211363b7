"""The part of a backup that runs on the hypervisor host: one pass over a block device (a restored
LINSTOR snapshot) that writes the qcow2 file OpenNebula's backup datastores copy away.

The driver sends this file's text over SSH (`python3 -c <text> ...`): nothing to install on the
hosts, standard library only, Python 3.6 or newer (RHEL 8's python3). It imports nothing of the
driver.

    python3 -c <text> <full|increment|changes> <device> <output> <block_size> [<base_device>]

stdin   the digests of the disk at the previous backup: 16 bytes per block (SHA-256, cut), an
        all-zero digest for an all-zero block. Empty: none kept (a full backup, or the
        front-end lost them: then <base_device>, the previous backup's snapshot, is read instead,
        and without it every block counts as changed).
        changes: first the blocks the storage says changed (8-byte count, then <QQc runs: first
        block, blocks, b"d" to read or b"z" now zeros), then those digests, which must be there:
        only the named blocks are read, every other block keeps its digest.
stdout  the digests of the device now, in the same form (the next increment compares with them).
stderr  errors as one line; on success a last line of JSON counts.
Both digest streams are read and written as the blocks pass (memory does not grow with the disk:
they are 256 MiB per TiB); the digests on stdout are complete only when the exit code is 0.

The qcow2 (version 3, clusters of <block_size>, no backing file: OpenNebula's downloaders and
`increment_flatten` give increments their backing file with `qemu-img rebase -u`):
- full: every block that holds data is written; zero blocks stay unallocated (they read as zeros);
- increment: a block whose digest did not change stays unallocated (it reads through to the
  previous backup); a changed block is written, and a changed block that is now all zeros
  becomes a zero cluster, which reads as zeros whatever lies below it in the chain. So the chain
  gives back the disk exactly, zeroed blocks included.
The file is written as `<output>.part.<pid>` and renamed when complete: a killed or failed run never
leaves a short file under the name the backup datastore copies.
"""
import errno
import hashlib
import json
import mmap
import os
import select
import struct
import sys
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor

DIGEST = 16
ZERO_DIGEST = bytes(DIGEST)
READ_CHUNK = 4 << 20
COPIED = 1 << 63            # qcow2: refcount is exactly 1
ZERO_CLUSTER = 1            # qcow2 v3 L2 entry: reads as zeros


def digests_of(buf, block):
    zero = bytes(block)
    out = []
    for at in range(0, len(buf), block):
        piece = buf[at:at + block]
        if piece == zero[:len(piece)]:
            out.append(ZERO_DIGEST)
        else:
            out.append(hashlib.sha256(piece).digest()[:DIGEST])
    return out


class Device:
    """The device, read with O_DIRECT where it can be: no read-ahead into the host's page cache
    (a backup must not push the VMs' cached data out), and on a freshly restored snapshot
    markedly faster than through the block device's own cache. Buffered where O_DIRECT is
    refused (some filesystems) or Python lacks preadv (3.6). Reads may run in several threads
    at once (pread/preadv release the interpreter): more requests in flight."""

    def __init__(self, path):
        self.path = path
        flags = os.O_RDONLY | getattr(os, "O_DIRECT", 0)
        try:
            self.fd = os.open(path, flags) if hasattr(os, "preadv") and flags != os.O_RDONLY else -1
        except OSError:
            self.fd = -1
        self.direct = self.fd >= 0
        if self.direct:
            try:
                self._direct(4096, 0)           # a filesystem may take the flag and refuse the read
            except OSError as err:
                if err.errno != errno.EINVAL:
                    raise
                os.close(self.fd)
                self.direct = False
        if not self.direct:
            self.fd = os.open(path, os.O_RDONLY)
        self.size = os.lseek(self.fd, 0, os.SEEK_END)

    def _direct(self, n, offset):
        buf = mmap.mmap(-1, (n + 4095) // 4096 * 4096)          # page-aligned, as O_DIRECT wants
        try:
            return buf[:min(os.preadv(self.fd, [buf], offset), n)]
        finally:
            buf.close()

    def read(self, n, offset):
        if self.direct:
            return self._direct(n, offset)
        parts = []
        while n > 0:
            data = os.pread(self.fd, n, offset)
            if not data:
                break
            parts.append(data)
            n -= len(data)
            offset += len(data)
        return b"".join(parts)

    def close(self):
        os.close(self.fd)


class Watchdog:
    """Notices that whoever started this is gone (the driver killed, its SSH session closed):
    stdout's reader closed, or this process handed to another parent. Nobody would use the
    file, and a later backup of the same disk must not meet this one."""

    def __init__(self):
        self.parent = os.getppid()
        self.poll = select.poll()
        self.poll.register(sys.stdout.fileno(), select.POLLOUT)

    def check(self):
        gone = any(ev & (select.POLLERR | select.POLLHUP) for _, ev in self.poll.poll(0))
        if gone or os.getppid() != self.parent:
            raise SystemExit("backup abandoned: the driver that started it is gone")


def read_and_hash(device, n, offset, block):
    buf = device.read(n, offset)
    if not buf:
        raise OSError(errno.EIO, "short read at byte %d" % offset, device.path)
    return buf, digests_of(buf, block)


def scan(device, size, block, pool, depth):
    """(block index, bytes, digest) for every block of the device, in order; each part read once,
    `depth` parts read and hashed at a time."""
    pending = deque()
    pos = 0
    watch = Watchdog()
    while pos < size or pending:
        watch.check()
        while pos < size and len(pending) < depth:
            n = min(READ_CHUNK, size - pos)
            pending.append((pos, pool.submit(read_and_hash, device, n, pos, block)))
            pos += n
        at, job = pending.popleft()
        buf, digests = job.result()
        first = at // block
        for i, digest in enumerate(digests):
            yield first + i, buf[i * block:(i + 1) * block], digest


class Digests:
    """Digests of the previous backup, by block index, read forward as the scan goes: from a
    stream (stdin), or computed from the base device alongside."""

    def __init__(self, stream=None, device=None, size=0, block=0, pool=None, depth=1):
        self.stream = stream
        self.device = device
        self.blocks = scan(device, min(size, device.size), block, pool, depth) if device is not None else None
        self.index = -1
        self.current = None

    def at(self, index):
        """The digest of block `index` (indexes only grow), or None where none is known."""
        while self.index < index:
            self.index += 1
            self.current = self._next()
            if self.current is None:
                self.index = 1 << 62            # the end: nothing further is known
                return None
        return self.current if self.index == index else None

    def _next(self):
        if self.stream is not None:
            data = b""
            while len(data) < DIGEST:
                more = self.stream.read(DIGEST - len(data))
                if not more:
                    return None
                data += more
            return data
        if self.blocks is not None:
            for _, _, digest in self.blocks:
                return digest
        return None

    def close(self):
        if self.device is not None:
            self.device.close()


class Qcow2Writer:
    """A qcow2 v3 file written front to back: header cluster, data and L2 tables as they come,
    then the L1 table and the refcounts of every cluster, then the header that points at them."""

    def __init__(self, fd, size, cluster_bits):
        self.fd = fd
        self.cluster = 1 << cluster_bits
        self.bits = cluster_bits
        self.size = size
        self.per_l2 = self.cluster // 8
        clusters = -(-size // self.cluster)
        self.l1 = [0] * max(1, -(-clusters // self.per_l2))
        self.end = self.cluster                 # cluster 0 is the header
        os.ftruncate(fd, 0)
        os.pwrite(fd, bytes(self.cluster), 0)
        self.l2 = None
        self.l2_index = -1
        self.written = 0

    def _alloc(self, data):
        offset = self.end
        os.pwrite(self.fd, data, offset)
        self.end += -(-len(data) // self.cluster) * self.cluster
        self.written += len(data)
        return offset

    def _table_for(self, index):
        table = index // self.per_l2
        if table != self.l2_index:
            self._flush_l2()
            self.l2 = bytearray(self.cluster)
            self.l2_index = table
        return (index % self.per_l2) * 8

    def _flush_l2(self):
        if self.l2 is not None and any(self.l2):
            self.l1[self.l2_index] = self._alloc(bytes(self.l2)) | COPIED
        self.l2 = None

    def data(self, index, buf):
        slot = self._table_for(index)
        if len(buf) < self.cluster:
            buf = buf + bytes(self.cluster - len(buf))
        struct.pack_into(">Q", self.l2, slot, self._alloc(buf) | COPIED)

    def zero(self, index):
        slot = self._table_for(index)
        struct.pack_into(">Q", self.l2, slot, ZERO_CLUSTER)

    def finish(self):
        self._flush_l2()
        l1_offset = self._alloc(b"".join(struct.pack(">Q", e) for e in self.l1))
        # refcount blocks (16-bit entries) and the table pointing at them count themselves too
        per_block = self.cluster // 2
        used = self.end // self.cluster
        blocks = table_clusters = 0
        while True:
            total = used + blocks + table_clusters
            need_blocks = -(-total // per_block)
            need_table = -(-(need_blocks * 8) // self.cluster)
            if (need_blocks, need_table) == (blocks, table_clusters):
                break
            blocks, table_clusters = need_blocks, need_table
        total = used + blocks + table_clusters
        first_block = self.end
        for b in range(blocks):
            count = min(per_block, total - b * per_block)
            self._alloc(struct.pack(">%dH" % count, *([1] * count)))
        table = b"".join(struct.pack(">Q", first_block + b * self.cluster) for b in range(blocks))
        table_offset = self._alloc(table.ljust(table_clusters * self.cluster, b"\0"))
        header = struct.pack(">4sIQIIQIIQQIIQQQQII", b"QFI\xfb", 3, 0, 0, self.bits, self.size, 0,
                             len(self.l1), l1_offset, table_offset, table_clusters, 0, 0, 0, 0, 0, 4, 104)
        os.pwrite(self.fd, header, 0)
        os.ftruncate(self.fd, self.end)       # no fsync: the backup datastore reads it at once


class _Prefixed:
    """A stream with bytes already read put back in front."""

    def __init__(self, head, rest):
        self.head, self.rest = head, rest

    def read(self, n):
        if self.head:
            out, self.head = self.head[:n], self.head[n:]
            return out
        return self.rest.read(n)


def read_exact(stream, n):
    data = b""
    while len(data) < n:
        more = stream.read(n - len(data))
        if not more:
            raise SystemExit("the driver's list of changed blocks ended early")
        data += more
    return data


def changed_blocks(source, size, block, writer, previous, runs, digests_out, counts):
    """Only the blocks the storage named: read ("d") or zeros now ("z"); every other block is
    unchanged since the previous backup and keeps its digest."""
    nblocks = -(-size // block)
    watch = Watchdog()
    index = 0

    def keep(upto):
        # unchanged: the previous digests go on as they were (zeros past the previous end: the
        # disk grew, and the new part reads as zeros)
        nonlocal index
        while index < upto:
            digest = previous.at(index)
            if digest is None:
                writer.zero(index)
                digest = ZERO_DIGEST
            digests_out.write(digest)
            counts["blocks"] += 1
            index += 1
    for start, count, kind in runs:
        if start < index or start + count > nblocks:
            raise SystemExit("the driver's list of changed blocks is out of order or past the disk")
        keep(start)
        watch.check()
        if kind == b"z":
            for _ in range(count):
                previous.at(index)
                writer.zero(index)
                digests_out.write(ZERO_DIGEST)
                counts["blocks"] += 1
                counts["zeroed"] += 1
                index += 1
            continue
        end = start + count
        while index < end:
            n = min(READ_CHUNK // block, end - index)
            buf = source.read(min(n * block, size - index * block), index * block)
            if not buf:
                raise OSError(errno.EIO, "short read at byte %d" % (index * block), source.path)
            counts["read_bytes"] += len(buf)
            for i, digest in enumerate(digests_of(buf, block)):
                before = previous.at(index)
                if digest != before:
                    if digest == ZERO_DIGEST:
                        writer.zero(index)
                        counts["zeroed"] += 1
                    else:
                        piece = buf[i * block:(i + 1) * block]
                        writer.data(index, piece)
                        counts["changed"] += 1
                        counts["data_bytes"] += len(piece)
                digests_out.write(digest)
                counts["blocks"] += 1
                index += 1
    keep(nblocks)


def whole_device(mode, source, size, block, base, out, previous_holder, digests_out, counts, workers):
    """Every block read: compared with the previous backup's digests (increment) or not (full)."""
    previous = previous_holder[0]
    with ThreadPoolExecutor(workers) as pool:
        if mode == "increment":
            stdin = sys.stdin.buffer
            first = stdin.read(DIGEST)
            if first:
                previous_holder[0] = previous = Digests(stream=_Prefixed(first, stdin))
            elif base:
                previous_holder[0] = previous = Digests(device=Device(base), size=size, block=block, pool=pool,
                                                        depth=workers * 2)
        writer = Qcow2Writer(out, size, block.bit_length() - 1)
        for index, buf, digest in scan(source, size, block, pool, workers * 2):
            try:
                digests_out.write(digest)
            except BrokenPipeError:
                raise SystemExit("backup abandoned: the driver that started it is gone")
            counts["blocks"] += 1
            counts["read_bytes"] += len(buf)
            if mode == "increment" and previous.at(index) == digest:
                continue                        # unchanged: read through to the last backup
            if digest == ZERO_DIGEST:
                if mode == "increment":
                    writer.zero(index)          # now zeros, whatever it held before
                    counts["zeroed"] += 1
                continue
            writer.data(index, buf)
            counts["changed"] += 1
            counts["data_bytes"] += len(buf)
        writer.finish()


def main(argv):
    mode, device, output, block = argv[0], argv[1], argv[2], int(argv[3])
    base = argv[4] if len(argv) > 4 else None
    if mode not in ("full", "increment", "changes") or block < 512 or block & (block - 1) or block > (2 << 20):
        raise SystemExit("usage: full|increment|changes <device> <output> <block_size> [<base_device>]")
    started = time.time()
    source = Device(device)
    size = source.size
    workers = max(1, min(4, (os.cpu_count() or 1)))
    part = "%s.part.%d" % (output, os.getpid())
    out = os.open(part, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o640)
    counts = {"blocks": 0, "changed": 0, "zeroed": 0, "data_bytes": 0, "read_bytes": 0}
    previous_holder = [Digests()]
    digests_out = sys.stdout.buffer
    try:
        if mode == "changes":
            stdin = sys.stdin.buffer
            n = struct.unpack("<Q", read_exact(stdin, 8))[0]
            runs = [struct.unpack("<QQc", read_exact(stdin, 17)) for _ in range(n)]
            previous_holder[0] = previous = Digests(stream=stdin)
            writer = Qcow2Writer(out, size, block.bit_length() - 1)
            try:
                changed_blocks(source, size, block, writer, previous, runs, digests_out, counts)
            except BrokenPipeError:
                raise SystemExit("backup abandoned: the driver that started it is gone")
            writer.finish()
        else:
            whole_device(mode, source, size, block, base, out, previous_holder, digests_out, counts, workers)
        os.close(out)
        out = -1
        os.rename(part, output)
    except BaseException as err:
        if isinstance(err, OSError) and not err.filename:
            err.filename = output               # a write failed (the backup directory is full...)
        if out >= 0:
            os.close(out)
        try:
            os.unlink(part)
        except OSError:
            pass
        raise
    finally:
        source.close()
        previous_holder[0].close()
    digests_out.flush()
    counts.update(size=size, file_bytes=os.path.getsize(output), seconds=round(time.time() - started, 3))
    sys.stderr.write(json.dumps(counts) + "\n")


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except OSError as err:
        sys.stderr.write("%s: %s\n" % (err.filename or "backup", err.strerror or err))
        sys.exit(1)
