"""Which blocks of a disk changed between two of its snapshots, asked of the storage pool where it
can say so, so that an increment reads only those.

LVM thin (LINSTOR's LVM_THIN pools): the pool's metadata maps each chunk of each thin volume and
snapshot to a data block; two snapshots share a data block until one of them is written. On a node
holding both snapshots (`<res>_<vol:05d>_<snapshot>`), `thin_delta` compares their mappings in a
metadata snapshot of the pool, which is reserved for the time of the question
(`dmsetup message <vg>-<pool>-tpool 0 reserve_metadata_snap`) and released after, also when the
command is stopped. A pool holds one metadata snapshot at a time: when another user has it
(LINSTOR's own backup shipping, thin_send), the reserve is tried again for a few seconds and then
given up. Chunks the new snapshot maps differently (or newly) are read; chunks it no longer maps
(a discard) are zeros; DRBD's metadata at the end of the volume is past the disk and left out.

Anything that does not add up gives no answer (`NoAnswer`, with the reason): the caller then
reads the whole snapshot, never a smaller increment. ZFS_THIN: not asked (see README).
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from .errors import DriverError

if TYPE_CHECKING:
    from .linstor_api import Linstor
    from .remote import Host

# one remote command: the two thin ids, the metadata snapshot reserved (tried again while another
# user holds it), thin_delta, the reservation released whatever happens
DELTA_SCRIPT = r'''
vg=$1 lv1=$2 lv2=$3 pool_dm=$4 meta=$5
for tool in thin_delta lvs dmsetup; do
    command -v "$tool" >/dev/null 2>&1 || { echo "no $tool on this host" >&2; exit 3; }
done
ids=$(lvs --noheadings -o thin_id "$vg/$lv1" "$vg/$lv2" 2>&1) || { echo "lvs: $ids" | tr '\n' ' ' >&2; exit 3; }
set -- $ids
[ $# -eq 2 ] || { echo "lvs gave no thin ids ($ids)" >&2; exit 3; }
tries=0
until out=$(dmsetup message "$pool_dm" 0 reserve_metadata_snap 2>&1); do
    case $out in *busy*|*Busy*) ;; *) echo "reserve_metadata_snap: $out" | tr '\n' ' ' >&2; exit 3 ;; esac
    tries=$((tries + 1))
    [ $tries -lt 5 ] || { echo "the pool's metadata snapshot is held by another user" >&2; exit 4; }
    sleep 1
done
release() { dmsetup message "$pool_dm" 0 release_metadata_snap >/dev/null 2>&1; }
trap release EXIT
trap 'release; trap - EXIT; exit 143' HUP INT TERM PIPE
thin_delta -m --snap1 "$1" --snap2 "$2" "$meta"
'''


class NoAnswer(Exception):
    """The pool cannot say which blocks changed (the message says why)."""


@dataclass(frozen=True)
class ThinPool:
    node: str
    vg: str
    pool: str

    def dm(self, lv: str) -> str:
        """device-mapper's name of an LV (a '-' in a name is doubled)."""
        return f"{self.vg.replace('-', '--')}-{lv.replace('-', '--')}"


@dataclass(frozen=True)
class Run:
    """Backup blocks [start, start + count) to read ("d") or to write as zeros ("z")."""
    start: int
    count: int
    kind: str


def snapshot_lv(resource: str, snapshot: str, volume: int = 0) -> str:
    return f"{resource}_{volume:05d}_{snapshot}"


def thin_pool_holding(api: "Linstor", resource: str, snap_nodes: list[str]) -> ThinPool:
    """An LVM_THIN pool on a node that holds the disk and both snapshots."""
    diskful = [r for r in api.replicas(resource) if not r.diskless and not r.tiebreaker]
    if not diskful:
        raise NoAnswer(f"{resource} has no disk in LINSTOR")
    kinds = {r.provider for r in diskful}
    if kinds != {"LVM_THIN"}:
        raise NoAnswer(f"the pool is {'/'.join(sorted(kinds))}, not LVM_THIN")
    stacks = {r.layers for r in diskful}
    if not stacks <= {("DRBD", "STORAGE"), ("STORAGE",)}:
        # (a LUKS or cache layer puts the disk's bytes elsewhere in the volume, or encrypted)
        raise NoAnswer(f"the layers are {'/'.join(','.join(s) or '?' for s in sorted(stacks))}: the disk is not "
                       f"the thin volume's bytes at the same place")
    nodes = [r for r in diskful if r.node.lower() in {n.lower() for n in snap_nodes}]
    if not nodes:
        raise NoAnswer("no node holds the disk and both snapshots")
    pools = {(p.node.lower(), p.name.lower()): p for p in api.storage_pools(nodes=[r.node for r in nodes])}
    for replica in nodes:
        pool = pools.get((replica.node.lower(), replica.pool.lower()))
        if pool is not None and pool.props.get("StorDriver/LvmVg") and pool.props.get("StorDriver/ThinPool"):
            return ThinPool(replica.node, pool.props["StorDriver/LvmVg"], pool.props["StorDriver/ThinPool"])
    raise NoAnswer("the storage pool does not name its volume group and thin pool")


def ask(host: "Host", pool: ThinPool, resource: str, base: str, snap: str) -> str:
    """thin_delta's answer (XML) for the two snapshots, from the pool's node."""
    try:
        out = host.run(["sh", "-c", DELTA_SCRIPT, "thin-delta", pool.vg, snapshot_lv(resource, base),
                        snapshot_lv(resource, snap), pool.dm(pool.pool) + "-tpool", f"/dev/mapper/{pool.dm(pool.pool)}_tmeta"],
                       f"ask {pool.vg}/{pool.pool} on {pool.node} which blocks of {resource} changed", check=False)
    except DriverError as err:
        raise NoAnswer(str(err)) from None
    if out.rc != 0:
        said = out.stderr.decode(errors="replace").strip().splitlines()
        raise NoAnswer(said[-1] if said else f"thin_delta exit code {out.rc}")
    return out.stdout.decode(errors="replace")


def runs(delta_xml: str, disk_bytes: int, block: int) -> list[Run]:
    """thin_delta's ranges (in pool chunks) as runs of backup blocks over the disk. A block is
    read where any of it changed, zeroed where all of it is unmapped now, else left out."""
    try:
        root = ElementTree.fromstring(delta_xml)
    except ElementTree.ParseError as err:
        raise NoAnswer(f"thin_delta's answer does not parse: {err}") from None
    chunk_sectors = int(root.get("data_block_size") or 0)
    diff = root.find("diff")
    if root.tag != "superblock" or chunk_sectors <= 0 or diff is None:
        raise NoAnswer("thin_delta's answer is not a diff")
    chunk = chunk_sectors * 512
    nblocks = (disk_bytes + block - 1) // block
    marks: dict[int, str] = {}              # block -> "d" | "z" (a "d" wins over a "z")
    zeroed: dict[int, int] = {}             # block -> bytes of it now unmapped
    for item in diff:
        if item.tag == "same":
            continue
        if item.tag not in ("different", "right_only", "left_only"):
            raise NoAnswer(f"thin_delta's answer has <{item.tag}>")
        begin, length = int(item.get("begin", -1)), int(item.get("length", -1))
        if begin < 0 or length <= 0:
            raise NoAnswer("thin_delta's answer has a range without begin or length")
        start, end = begin * chunk, min((begin + length) * chunk, disk_bytes)
        if start >= end:
            continue                        # past the disk (DRBD's metadata)
        for b in range(start // block, min((end + block - 1) // block, nblocks)):
            if item.tag == "left_only":
                covered = min(end, (b + 1) * block) - max(start, b * block)
                zeroed[b] = zeroed.get(b, 0) + covered
            else:
                marks[b] = "d"
    for b, covered in zeroed.items():
        if b not in marks:
            whole = min(block, disk_bytes - b * block)
            marks[b] = "z" if covered >= whole else "d"      # partly unmapped: read to be exact
    out: list[Run] = []
    for b in sorted(marks):
        if out and out[-1].kind == marks[b] and out[-1].start + out[-1].count == b:
            out[-1] = Run(out[-1].start, out[-1].count + 1, marks[b])
        else:
            out.append(Run(b, 1, marks[b]))
    return out


def changed_runs(api: "Linstor", hosts, resource: str, base: str, snap: str, snap_nodes: list[str],
                 disk_bytes: int, block: int) -> tuple[list[Run], ThinPool]:
    pool = thin_pool_holding(api, resource, snap_nodes)
    return runs(ask(hosts[pool.node], pool, resource, base, snap), disk_bytes, block), pool


def encode(runs_: list[Run]) -> bytes:
    """For the host program: 8-byte count, then (start, count, kind) as <QQc."""
    import struct
    return struct.pack("<Q", len(runs_)) + b"".join(struct.pack("<QQc", r.start, r.count, r.kind.encode())
                                                    for r in runs_)


_NAME = re.compile(r"^[A-Za-z0-9_+.-]+$")


def usable_names(*names: str) -> Optional[str]:
    """LVM and dmsetup take these names as they are: None, or why not."""
    bad = [n for n in names if not _NAME.match(n)]
    return f"names LVM would not take as they are: {', '.join(bad)}" if bad else None
