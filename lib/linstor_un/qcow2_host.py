"""The part of a qcow2 import that runs on the bridge host: the image read once, as a stream from
stdin, its guest data written straight onto the block device. No staging file of the whole image
(qemu-img needs one: it cannot read qcow2 from a pipe).

The driver sends this file's text over SSH (`python3 -c <text> ...`): standard library only,
Python 3.6 or newer. It imports nothing of the driver.

    python3 -c <text> <device> <spill_dir> <thin:0|1>

A qcow2 file is read front to back. Its L1 table says where the L2 tables are, and each L2 table
says which guest cluster a data cluster holds. Images written by qemu-img have each L2 table
before the data it maps, so almost every data cluster is known when it arrives and goes to its
place on the device at once. A cluster that arrives before the table that maps it is kept (in
memory up to SPILL_AFTER, then in a temporary file in <spill_dir>) until its place is known, and
dropped at the end if it never was (refcount blocks, snapshot tables, unused space). Compressed
clusters (deflate) are inflated when all their bytes are in. Unallocated and zero clusters are
skipped on a thin target (it reads zeros) and zeroed on a thick one; on a thin target all-zero
data clusters are skipped as well (as `dd conv=sparse`). The device is flushed at the end.

Images this cannot take (a backing file, encryption, an external data file, extended L2 entries,
zstd compression) are refused with exit code 3 before anything is written: the driver then stages
the file and lets qemu-img convert it. stderr: errors as one line; on success a JSON line.
"""
import errno
import itertools
import json
import mmap
import os
import struct
import sys
import tempfile
import zlib

READ_CHUNK = 4 << 20
SPILL_AFTER = 256 << 20
UNSUPPORTED = 3
OFFSET_MASK = 0x00fffffffffffe00
COMPRESSED = 1 << 62
ZERO_FLAG = 1
BLKZEROOUT = 0x127f


class Unsupported(Exception):
    pass


class Header:
    def __init__(self, raw):
        (magic, version, backing_offset, _backing_size, cluster_bits, size, crypt, l1_size, l1_offset,
         _refcount_offset, _refcount_clusters, _snapshots, _snapshots_offset) = struct.unpack(">IIQIIQIIQQIIQ",
                                                                                              raw[:72])
        if magic != 0x514649fb:
            raise Unsupported("not a qcow2 image")
        if version not in (2, 3):
            raise Unsupported("qcow2 version %d" % version)
        if backing_offset:
            raise Unsupported("the image has a backing file")
        if crypt:
            raise Unsupported("the image is encrypted")
        incompatible = struct.unpack(">Q", raw[72:80])[0] if version == 3 else 0
        # bit 0 dirty (refcounts only), bit 1 corrupt, 2 external data file, 3 compression type, 4 extended L2
        if incompatible & ~1:
            raise Unsupported("incompatible features 0x%x" % incompatible)
        if not 9 <= cluster_bits <= 21:
            raise Unsupported("cluster_bits %d" % cluster_bits)
        self.cluster_bits = cluster_bits
        self.cluster = 1 << cluster_bits
        self.size = size
        self.l1_size = l1_size
        self.l1_offset = l1_offset


class Device:
    """The target, written as `dd oflag=direct` does where it can (O_DIRECT from a page-aligned
    buffer: the host's page cache is not filled with the image), in runs of contiguous clusters."""

    RUN = 8 << 20

    def __init__(self, path, size, thin):
        self.fd = os.open(path, os.O_WRONLY)
        try:
            self.direct = os.open(path, os.O_WRONLY | getattr(os, "O_DIRECT", 0))
        except OSError:
            self.direct = None
        self.size = size
        self.thin = thin
        self.buf = mmap.mmap(-1, self.RUN)      # page-aligned, as O_DIRECT wants
        self.run_at = None                      # guest offset of the run in buf
        self.run_len = 0
        self.written = 0
        self.zeroed = 0
        self.zeros = b""

    def put(self, guest, data):
        data = data[:max(0, self.size - guest)]
        if not data:
            return
        if self.thin:
            if len(self.zeros) != len(data):
                self.zeros = bytes(len(data))
            if data == self.zeros:          # (a compare: it stops at the first byte of data)
                return
        if self.run_at is None or self.run_at + self.run_len != guest or self.run_len + len(data) > self.RUN:
            self.flush_run()
            self.run_at = guest
        self.buf[self.run_len:self.run_len + len(data)] = data
        self.run_len += len(data)

    def _write(self, view, at):
        fd = self.direct if self.direct is not None and at % 4096 == 0 and len(view) % 4096 == 0 else self.fd
        while view:
            try:
                n = os.pwrite(fd, view, at)
            except OSError as err:
                if fd != self.direct or err.errno != errno.EINVAL:
                    raise
                fd = self.fd                # the device takes no O_DIRECT after all
                continue
            view, at = view[n:], at + n

    def flush_run(self):
        if self.run_at is None:
            return
        self._write(memoryview(self.buf)[:self.run_len], self.run_at)
        self.written += self.run_len
        self.run_at, self.run_len = None, 0

    def zero(self, guest, length):
        """Zeros over what no cluster wrote (thick targets: their old blocks are not zeros)."""
        length = min(length, self.size - guest)
        if length <= 0:
            return
        self.flush_run()
        try:
            import fcntl
            fcntl.ioctl(self.fd, BLKZEROOUT, struct.pack("QQ", guest, length))
        except (OSError, ImportError):
            self.buf[:] = bytes(self.RUN)
            at, end = guest, guest + length
            while at < end:
                n = min(self.RUN, end - at)
                self._write(memoryview(self.buf)[:n], at)
                at += n
        self.zeroed += length

    def close(self):
        self.flush_run()
        os.fsync(self.fd)
        for fd in (self.fd, self.direct):
            if fd is not None:
                os.close(fd)
        self.buf.close()


class Kept:
    """Clusters read before their place was known: in memory, then in a spill file."""

    def __init__(self, spill_dir):
        self.memory = {}
        self.in_memory = 0
        self.spill_dir = spill_dir
        self.file = None
        self.on_disk = {}           # host offset -> offset in the spill file
        self.spilled = 0

    def put(self, offset, data):
        if self.in_memory + len(data) <= SPILL_AFTER:
            self.memory[offset] = bytes(data)
            self.in_memory += len(data)
            return
        if self.file is None:
            self.file = tempfile.TemporaryFile(dir=self.spill_dir, prefix="linstor_un-qcow2-")
        at = self.spilled
        os.pwrite(self.file.fileno(), data, at)
        self.on_disk[offset] = (at, len(data))
        self.spilled += len(data)

    def __contains__(self, offset):
        return offset in self.memory or offset in self.on_disk

    def take(self, offset, keep=False):
        if offset in self.memory:
            return self.memory[offset] if keep else self._drop_memory(offset)
        at, length = self.on_disk[offset] if keep else self.on_disk.pop(offset)
        return os.pread(self.file.fileno(), length, at)

    def _drop_memory(self, offset):
        data = self.memory.pop(offset)
        self.in_memory -= len(data)
        return data

    def close(self):
        if self.file is not None:
            self.file.close()


class Importer:
    def __init__(self, header, device, kept):
        self.h = header
        self.dev = device
        self.kept = kept
        self.l2_at = {}             # host offset of an L2 table -> index in L1
        self.data_at = {}           # host offset of a data cluster -> [guest offsets]
        self.compressed = {}        # host cluster holding a compressed extent's last byte -> [(start, len, guest)]
        self.pinned = {}            # host cluster -> compressed extents still needing it
        self.done_guest = bytearray((header.size + header.cluster - 1) >> header.cluster_bits)
        self.l1_seen = False
        self.pos = 0                # bytes of the file read so far

    # ---- what a table says -----------------------------------------------------------------
    def learn_l1(self, raw):
        self.l1_seen = True
        for i in range(self.h.l1_size):
            entry = struct.unpack_from(">Q", raw, i * 8)[0] & OFFSET_MASK
            if entry:
                self.l2_at[entry] = i
                if entry in self.kept:
                    self.learn_l2(i, self.kept.take(entry))

    def learn_l2(self, index, raw):
        per_table = self.h.cluster // 8
        for j in range(per_table):
            guest_cluster = index * per_table + j
            if guest_cluster >= len(self.done_guest):
                break
            entry = struct.unpack_from(">Q", raw, j * 8)[0]
            guest = guest_cluster << self.h.cluster_bits
            if entry & COMPRESSED:
                self.learn_compressed(entry, guest)
                continue
            host = entry & OFFSET_MASK
            if not host or entry & ZERO_FLAG:
                continue            # reads as zeros: done at the end (thick) or nothing (thin)
            if host in self.kept:
                self.place(guest, self.kept.take(host))
            else:
                self.data_at.setdefault(host, []).append(guest)

    def learn_compressed(self, entry, guest):
        bits = 62 - (self.h.cluster_bits - 8)
        start = entry & ((1 << bits) - 1)
        sectors = ((entry >> bits) & ((1 << (self.h.cluster_bits - 8)) - 1)) + 1
        length = sectors * 512 - (start & 511)
        clusters = self.clusters_of(start, length)
        extent = (start, length, guest)
        if clusters[-1] < self.pos:         # all of it went by already (its table comes late)
            if not all(c in self.kept for c in clusters):
                raise ValueError("the image maps compressed data after the stream let it go (a layout "
                                 "qemu-img does not write): convert it with `qemu-img convert` first")
            self.inflate(extent, release=False)
            return
        for c in clusters:
            self.pinned[c] = self.pinned.get(c, 0) + 1
        self.compressed.setdefault(clusters[-1], []).append(extent)

    def clusters_of(self, start, length):
        return list(range(self.cluster_of(start), self.cluster_of(start + length - 1) + 1, self.h.cluster))

    def cluster_of(self, offset):
        return offset & ~(self.h.cluster - 1)

    # ---- bytes to the device ------------------------------------------------------------------
    def place(self, guest, data):
        self.dev.put(guest, data)
        self.done_guest[guest >> self.h.cluster_bits] = 1

    def inflate(self, extent, release=True):
        """A compressed extent, all its clusters kept, inflated onto its guest cluster; with
        `release`, the clusters it pinned are let go when no other extent waits for them."""
        start, length, guest = extent
        clusters = self.clusters_of(start, length)
        raw = b"".join(self.kept.take(c, keep=True) for c in clusters)
        skip = start - clusters[0]
        try:
            data = zlib.decompressobj(-12).decompress(raw[skip:skip + length], self.h.cluster)
        except zlib.error as err:
            raise ValueError("a compressed cluster of the image is damaged: %s" % err)
        self.place(guest, data[:self.h.cluster].ljust(self.h.cluster, b"\0"))
        if release:
            for c in clusters:
                self.pinned[c] -= 1
                if not self.pinned[c]:
                    del self.pinned[c]
                    self.kept.take(c)

    # ---- the stream ----------------------------------------------------------------------------
    def cluster(self, offset, data):
        """One cluster of the file, at `offset`, as it goes by (self.pos is already past it)."""
        handled = False
        if offset in self.data_at:
            for guest in self.data_at.pop(offset):
                self.place(guest, data)
            handled = True
        if offset in self.l2_at:
            self.learn_l2(self.l2_at[offset], data)
            handled = True
        if not handled:             # not known yet (or compressed data): kept until it is
            self.kept.put(offset, data)
        for extent in self.compressed.pop(offset, []):
            self.inflate(extent)

    def finish(self):
        """Thick targets: zeros over every run of guest clusters nothing was written to."""
        if self.dev.thin:
            return
        at = 0
        for done, run in itertools.groupby(self.done_guest):
            n = sum(1 for _ in run)
            if not done:
                self.dev.zero(at << self.h.cluster_bits, n << self.h.cluster_bits)
            at += n


def read_exactly(stream, n):
    parts, got = [], 0
    while got < n:
        block = stream.read(n - got)
        if not block:
            break
        parts.append(block)
        got += len(block)
    return b"".join(parts)


def clusters(stream, head, size):
    """(offset, bytes) of each cluster of the file in order, `head` being its first bytes read."""
    buf, offset = head, 0
    while True:
        if len(buf) < size:
            buf += read_exactly(stream, max(READ_CHUNK, size))
        if not buf:
            return
        view = memoryview(buf)
        whole = len(buf) - len(buf) % size if len(buf) >= size else len(buf)
        for at in range(0, whole, size):
            yield offset + at, bytes(view[at:at + size])
        offset += whole
        buf = bytes(view[whole:])


def main(argv):
    device, spill_dir, thin = argv[1], argv[2], argv[3] == "1"
    stdin = sys.stdin.buffer
    first = read_exactly(stdin, 1 << 16)
    try:
        header = Header(first)
    except (Unsupported, struct.error) as err:
        sys.stderr.write("unsupported qcow2: %s\n" % err)
        return UNSUPPORTED
    dev = Device(device, header.size, thin)
    kept = Kept(spill_dir)
    imp = Importer(header, dev, kept)
    l1_start, l1_end = header.l1_offset, header.l1_offset + header.l1_size * 8
    l1 = bytearray()
    try:
        for offset, chunk in clusters(stdin, first, header.cluster):
            imp.pos = end = offset + len(chunk)
            if offset == 0:
                continue                # the header
            if not imp.l1_seen and end > l1_start and offset < l1_end:
                # the L1 table (it may span clusters, which hold nothing else)
                l1 += chunk[max(0, l1_start - offset):l1_end - offset]
                if end >= l1_end:
                    imp.learn_l1(bytes(l1))
                continue
            imp.cluster(offset, chunk)
        if not imp.l1_seen:
            raise ValueError("the image ended before its L1 table")
        if imp.data_at or imp.compressed:
            raise ValueError("the image ended before %d of its data clusters"
                             % (sum(len(g) for g in imp.data_at.values()) + sum(map(len, imp.compressed.values()))))
        imp.finish()
        dev.close()
    finally:
        kept.close()
    sys.stderr.write(json.dumps({"written": dev.written, "zeroed": dev.zeroed, "kept_in_memory": kept.in_memory,
                                 "spilled": kept.spilled, "file_bytes": imp.pos}) + "\n")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except (OSError, ValueError) as err:
        sys.stderr.write("qcow2 import failed: %s\n" % err)
        sys.exit(1)
