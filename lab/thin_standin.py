"""A STAND-IN for LVM thin pools on the lab's hosts: `lvs` and `dmsetup` as far as the driver's
changed-block increments use them, over REAL thin-pool metadata.

The lab has no device-mapper, so a host has no thin pool. What the driver asks of one is which
blocks two thin snapshots map differently; that answer comes from the real `thin_delta` (Debian's
thin-provisioning-tools) reading real thin-pool metadata. This program makes that metadata:
when the driver reserves the pool's metadata snapshot (`dmsetup message <vg>-<pool>-tpool 0
reserve_metadata_snap`), it writes, with the real `thin_restore`, the metadata of every LINSTOR
snapshot the emulated controller holds on this host in that pool, from the chunk maps the
emulator keeps beside each snapshot's bytes (lab/linstor_emu/dataplane.py, write_thin_map), to
`/dev/mapper/<vg>-<pool>_tmeta` (a file in the host's own /dev), and then holds a metadata
snapshot in it as the kernel would (a copy of the superblock, its block number in the
superblock's metadata_snap field). The rest answers the way LVM and dmsetup answer:

    lvs [--noheadings] [--nosuffix] [--units b] -o <fields> <vg>/<lv>...   (lv_name, vg_name,
        pool_lv, thin_id, lv_size); "Failed to find logical volume" (exit 5) for another LV
    dmsetup message <vg>-<pool>-tpool 0 reserve_metadata_snap | release_metadata_snap
        (a second reserve: "Device or resource busy", exit 1, as dm-thin refuses it)
    dmsetup status <vg>-<pool>-tpool

Not emulated: the origin volumes' own mappings (not in the metadata), data allocation order,
transaction ids. LVs are `<resource>_<volume:05d>` and `<resource>_<volume:05d>_<snapshot>`, as
LINSTOR names them.

    thin_standin.py <controller state file> <emulator data dir> lvs|dmsetup <args...>
"""
import json
import os
import struct
import subprocess
import sys
import tempfile

MAGIC = b"LABTHIN1"
BLOCK = 4096
SUPERBLOCK_CSUM_XOR = 160774


def crc32c(data, crc=0xFFFFFFFF):
    table = _TABLE
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc


def _table():
    out = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        out.append(c)
    return out


_TABLE = _table()


def sealed(block):
    """A superblock with its checksum (dm-thin: crc32c of all but the checksum field, xor'd)."""
    return struct.pack("<I", (crc32c(block[4:]) ^ SUPERBLOCK_CSUM_XOR) & 0xFFFFFFFF) + bytes(block[4:])


def dm_name(vg, lv):
    return vg.replace("-", "--") + "-" + lv.replace("-", "--")


class Lab:
    def __init__(self, state_file, data_dir):
        with open(state_file) as f:
            self.s = json.load(f)
        self.data_dir = data_dir
        self.node = os.environ.get("LAB_HOST", "").upper()

    def thin_pools(self):
        """(vg, pool) -> storage pool name, of this host's LVM_THIN pools."""
        out = {}
        for pool in self.s["pools"].get(self.node, {}).values():
            if pool.get("provider_kind") == "LVM_THIN":
                props = pool.get("props", {})
                out[(props.get("StorDriver/LvmVg"), props.get("StorDriver/ThinPool"))] = pool["name"]
        return out

    def lvs(self, vg):
        """LV name -> (thin id or None for an origin, map file, size in bytes, pool) on this host in vg."""
        out = {}
        pools = {v: (pool_lv, name) for (v, pool_lv), name in self.thin_pools().items()}
        if vg not in pools:
            return out
        pool_lv, pool_name = pools[vg]
        for rd in self.s["rds"].values():
            rsc = rd["rscs"].get(self.node)
            for snap in rd.get("snaps", {}).values():
                if self.node not in {n.upper() for n in snap.get("nodes", [])}:
                    continue
                if snap.get("pools", {}).get(next((n for n in snap["nodes"] if n.upper() == self.node), ""),
                                             "").upper() != pool_name.upper():
                    continue
                for vd in snap.get("vds", []):
                    vnr = int(vd["volume_number"])
                    image = os.path.join(self.data_dir, "snapshots", rd["name"].upper(), snap["name"].upper(),
                                         "%d.img" % vnr)
                    out["%s_%05d_%s" % (rd["name"], vnr, snap["name"])] = (
                        snap.get("thin_id"), image + ".map", vd["size_kib"] * 1024, pool_lv)
            if rsc is not None and rsc.get("pool", "").upper() == pool_name.upper():
                for vnr, vd in rd.get("vds", {}).items():
                    out["%s_%05d" % (rd["name"], int(vnr))] = (None, None, vd["size_kib"] * 1024, pool_lv)
        return out


def lvs(lab, args):
    fields, names, noheadings = ["lv_name", "vg_name", "attr", "lsize"], [], False
    i = 0
    while i < len(args):
        a = args[i]
        if a in ("-o", "--options"):
            fields = args[i + 1].split(",")
            i += 2
            continue
        if a == "--noheadings":
            noheadings = True
        elif a in ("--units", "--separator"):
            i += 1
        elif not a.startswith("-"):
            names.append(a)
        i += 1
    rc, lines = 0, []
    for name in names:
        vg, _, lv = name.partition("/")
        found = lab.lvs(vg).get(lv)
        if found is None:
            sys.stderr.write('  Failed to find logical volume "%s"\n' % name)
            rc = 5
            continue
        thin_id, _, size, pool_lv = found
        values = {"lv_name": lv, "vg_name": vg, "pool_lv": pool_lv, "thin_id": "" if thin_id is None else str(thin_id),
                  "lv_size": str(size), "lsize": str(size), "attr": "Vwi-a-tz--"}
        lines.append("  " + " ".join(values.get(f.strip(), "") for f in fields))
    if lines and not noheadings:
        print("  " + " ".join(f.strip().upper() for f in fields))
    for line in lines:
        print(line)
    return rc


def pool_of(lab, name):
    for (vg, pool_lv) in lab.thin_pools():
        if name == dm_name(vg, pool_lv) + "-tpool" or name == dm_name(vg, pool_lv):
            return vg, pool_lv
    return None


def held_flag(vg, pool_lv):
    return "/dev/mapper/.lab-%s.held" % dm_name(vg, pool_lv)


def metadata_path(vg, pool_lv):
    return "/dev/mapper/%s_tmeta" % dm_name(vg, pool_lv)


def write_metadata(lab, vg, pool_lv):
    """The pool's metadata, with every snapshot on this host in it, and a metadata snapshot held."""
    maps = []
    for lv, (thin_id, map_file, _, _) in sorted(lab.lvs(vg).items()):
        if thin_id is None or not os.path.exists(map_file):
            continue
        with open(map_file, "rb") as f:
            head = f.read(16)
            if head[:8] != MAGIC:
                continue
            kib, count = struct.unpack("<II", head[8:16])
            maps.append((thin_id, kib, count, f.read(8 * count)))
    # a pool has one chunk size: the newest snapshot's (the lab may change it between tests; maps
    # of another size are not this pool's)
    chunk_kib = max(maps)[1] if maps else 64
    devices, blocks = [], {}
    for thin_id, kib, count, keys in sorted(maps):
        if kib != chunk_kib:
            continue
        mappings = []
        for index in range(count):
            key = struct.unpack_from("<Q", keys, 8 * index)[0]
            if key:
                mappings.append((index, blocks.setdefault(key, len(blocks))))
        devices.append((thin_id, mappings))
    xml = ['<superblock uuid="" time="1" transaction="1" flags="0" version="2" data_block_size="%d" '
           'nr_data_blocks="%d">' % (chunk_kib * 2, max(len(blocks), 1) + 1024)]
    for thin_id, mappings in devices:
        xml.append('<device dev_id="%d" mapped_blocks="%d" transaction="0" creation_time="0" snap_time="0">'
                   % (thin_id, len(mappings)))
        xml += ['<single_mapping origin_block="%d" data_block="%d" time="0"/>' % m for m in mappings]
        xml.append("</device>")
    xml.append("</superblock>")
    path = metadata_path(vg, pool_lv)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    nblocks = max(4096, 64 + sum(len(m) for _, m in devices) // 64 * 2)
    with tempfile.NamedTemporaryFile("w", suffix=".xml") as x:
        x.write("\n".join(xml))
        x.flush()
        with open(path, "wb") as f:
            f.truncate(nblocks * BLOCK)
        done = subprocess.run(["thin_restore", "-q", "-i", x.name, "-o", path], capture_output=True, text=True)
        if done.returncode != 0:
            sys.stderr.write("thin_restore: %s\n" % done.stderr.strip())
            return False
    # hold a metadata snapshot: a copy of the superblock at the last block, named in the superblock
    with open(path, "r+b") as f:
        sb = bytearray(f.read(BLOCK))
        at = nblocks - 1
        copy = bytearray(sb)
        struct.pack_into("<Q", copy, 8, at)          # the block's own number
        struct.pack_into("<Q", copy, 56, 0)
        f.seek(at * BLOCK)
        f.write(sealed(copy))
        struct.pack_into("<Q", sb, 56, at)           # held metadata root
        f.seek(0)
        f.write(sealed(sb))
    return True


def dmsetup(lab, args):
    if len(args) >= 4 and args[0] == "message":
        name, verb = args[1], args[3]
        pool = pool_of(lab, name)
        if pool is None:
            sys.stderr.write("device-mapper: message ioctl on %s failed: No such device or address\n"
                             "Command failed.\n" % name)
            return 1
        flag = held_flag(*pool)
        if verb == "reserve_metadata_snap":
            if os.path.exists(flag):
                sys.stderr.write("device-mapper: message ioctl on %s  failed: Device or resource busy\n"
                                 "Command failed.\n" % name)
                return 1
            if not write_metadata(lab, *pool):
                return 1
            open(flag, "w").close()
            return 0
        if verb == "release_metadata_snap":
            if not os.path.exists(flag):
                sys.stderr.write("device-mapper: message ioctl on %s  failed: Invalid argument\n"
                                 "Command failed.\n" % name)
                return 1
            os.unlink(flag)
            return 0
        sys.stderr.write("device-mapper: message ioctl on %s  failed: Invalid argument\n" % name)
        return 1
    if len(args) >= 2 and args[0] == "status":
        pool = pool_of(lab, args[1])
        if pool is None:
            sys.stderr.write("Device %s not found\nCommand failed.\n" % args[1])
            return 1
        held = "-"
        if os.path.exists(held_flag(*pool)):
            with open(metadata_path(*pool), "rb") as f:
                held = str(struct.unpack_from("<Q", f.read(64), 56)[0])
        print("0 209715200 thin-pool 1 100/4096 1000/1638400 %s rw discard_passdown queue_if_no_space - 1024" % held)
        return 0
    sys.stderr.write("dmsetup (lab stand-in): %s is not emulated\n" % " ".join(args))
    return 1


def main(argv):
    lab = Lab(argv[0], argv[1])
    tool, args = argv[2], argv[3:]
    return lvs(lab, args) if tool == "lvs" else dmsetup(lab, args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
