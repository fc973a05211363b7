"""What the driver does on a hypervisor host: links, copies, filesystems, domains.

Every command is an argument list (quoted by remote.Host); each function names its step so a
failure says where it happened.
"""
from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Callable, Optional

from .errors import DriverError, HungCommand
from .remote import Host, Shell

if TYPE_CHECKING:                   # python-linstor is not for every action that runs host commands
    from .linstor_api import Replica

FILESYSTEMS = {"ext2": ["-F", "-q"], "ext3": ["-F", "-q"], "ext4": ["-F", "-q"], "xfs": ["-f", "-q"],
               "vfat": [], "btrfs": ["-f", "-q"]}
LIBVIRT_URI = "qemu:///system"


def link(host: Host, device: str, path: str) -> bool:
    """<path> -> <device>, with the VM directory created: what the VM's deployment file points at.
    Returns True if the VM directory had to be created."""
    # a directory made here is removed again if the link fails: a failed step leaves nothing
    script = ('made=; [ -d "$1" ] || made=1; mkdir -p "$1" && ln -sfn "$2" "$3" && { [ -z "$made" ] || '
              'echo created; exit 0; }; rc=$?; [ -z "$made" ] || rmdir "$1" 2>/dev/null; exit $rc')
    try:
        out = host.run(["sh", "-c", script, "link", os.path.dirname(path), device, path], f"link {path} to {device}")
    except HungCommand:
        # it may or may not have made the link and the directory: take both back (an empty VM
        # directory is all that can go that was not ours; the next action makes it again)
        unlink(host, path, remove_empty_dir=True)
        raise
    return out.stdout.strip() == b"created"


def unlink(host: Host, path: str, check: bool = False, remove_empty_dir: bool = False) -> None:
    """Remove a disk link (and, when this action created it, the VM directory if now empty)."""
    if remove_empty_dir:
        host.run(Shell.join(["rm", "-f", path], "&&", ["rmdir", "--ignore-fail-on-non-empty",
                                                       os.path.dirname(path)]), f"remove {path}", check=check)
    else:
        host.run(["rm", "-f", path], f"remove {path}", check=check)


def linked_elsewhere(host: Host, path: str) -> Callable[[Replica], bool]:
    """For Attacher.detach: does a VM disk on `host` other than `path`
    (<DATASTORE_LOCATION>/<ds>/<vm>/disk.<n>) link to the replica's device? One remote command,
    run only when a diskless replica would go (a shared image in use elsewhere stays: BUG-15)."""
    datastores = os.path.dirname(os.path.dirname(os.path.dirname(path)))
    script = ("for l in \"$1\"/*/*/disk.*; do [ -L \"$l\" ] || continue; [ \"$l\" = \"$2\" ] && continue; "
              "[ \"$(readlink \"$l\")\" = \"$3\" ] && echo \"$l\"; done; true")

    def linked(replica: Replica) -> bool:
        if not replica.device:
            return False
        out = host.run(["sh", "-c", script, "sh", datastores, path, replica.device],
                       f"look for other users of {replica.device}", check=False)
        return bool(out.stdout.strip())
    return linked


def copy(host: Host, src: str, dst: str, sparse: bool, block_size: str = "64k") -> None:
    """Byte copy between two devices on one host. `sparse` only where the target reads zeros
    wherever nothing was written (a new thin volume); otherwise zeros are written too (BUG-12)."""
    conv = "sparse,fsync" if sparse else "fsync"
    host.run(["dd", f"if={src}", f"of={dst}", f"bs={block_size}", "iflag=direct", "oflag=direct",
              f"conv={conv}", "status=none"], f"copy {src} to {dst}", bulk=True)


def transfer_limit(size_bytes: int) -> float:
    """How long reading or writing a disk of that size may take, whole: generous (10 MiB/s, plus
    10 minutes), but a limit - a host that stops answering does not hold a backup for ever."""
    return 600 + size_bytes / (10 << 20)


def zero(host: Host, device: str, offset: int, length: int, limit: Optional[float] = None) -> None:
    """Zeros over `length` bytes of `device` from byte `offset` on (`limit`: seconds it may take)."""
    host.run(["dd", "if=/dev/zero", f"of={device}", "bs=1M", f"seek={offset}", "oflag=seek_bytes",
              f"count={length}", "iflag=count_bytes", "conv=fsync", "status=none"],
             f"zero {device} from byte {offset}", **({"timeout": limit} if limit else {"bulk": True}))


def mkfs(host: Host, device: str, fs: str) -> None:
    fs = fs.lower()
    if fs not in FILESYSTEMS:
        raise DriverError(f"unsupported filesystem '{fs}' (supported: {', '.join(sorted(FILESYSTEMS))})")
    host.run([f"mkfs.{fs}", *FILESYSTEMS[fs], device], f"create {fs} filesystem on {device}", bulk=True)


def mkswap(host: Host, device: str) -> None:
    host.run(["mkswap", "-L", "swap", device], f"create swap on {device}")


def qcow2(host: Host, device: str, size_mb: int) -> None:
    host.run(["qemu-img", "create", "-q", "-f", "qcow2", device, f"{size_mb}M"],
             f"write a qcow2 header on {device}")


def virsh(host: Host, args: list[str], step: str, check: bool = True, uri: Optional[str] = None):
    # saving, restoring and copying a domain move its memory or disk: as long as that takes
    return host.run(["virsh", "-c", uri or LIBVIRT_URI, *args], step, check=check,
                    bulk=args[0] in ("save", "restore", "blockcopy"))


def leave_dir(src: Host, src_path: str, dst: Host, dst_path: str, remove: bool = True) -> list[str]:
    """The VM directory moves: what is in it besides the disk links (a checkpoint file the stock
    kvm/qemu save wrote, deployment files) is carried to the new place before the old directory
    goes; a file that cannot be carried stops the move with the old directory intact. Disk links
    are not carried: each disk's own mv links it on the new host. Returns the names carried.
    One command when there is nothing to carry (the usual case)."""
    _vm_dir(src_path)
    # prints what is not a link; removes the directory only when that is nothing
    script = ('[ -d "$1" ] || exit 0; left=$(find "$1" -mindepth 1 -maxdepth 1 ! -type l -printf "%f\\n"); '
              'if [ -n "$left" ]; then printf "%s\\n" "$left"; elif [ "$2" = remove ]; then rm -rf "$1"; fi')
    out = src.run(["sh", "-c", script, "leave", src_path, "remove" if remove else "keep"],
                  f"look into {src_path}")
    names = sorted(n for n in out.stdout.decode(errors="surrogateescape").splitlines() if n)
    if not names:
        return []
    from .remote import stream
    stream(src, ["tar", "-C", src_path, "-cf", "-", "--", *names],
           dst, Shell.join(["mkdir", "-p", dst_path], "&&", ["tar", "-C", dst_path, "-xf", "-"]),
           f"carry {', '.join(names)} of {src_path}")
    if remove:
        src.run(["rm", "-rf", src_path], f"remove {src_path}")
    return names


def copy_dir_here(host: Host, src_path: str, dst_path: str) -> None:
    """What a VM directory holds, copied into another on the same host (a VM moving to another
    system datastore): links stay links, files keep their holes; what is already in the new
    directory (the disk links just made) is replaced by the old directory's version only where
    the old one has the same name."""
    _vm_dir(src_path)
    _vm_dir(dst_path)
    host.run(Shell.join(["mkdir", "-p", dst_path], "&&",
                        ["cp", "-a", "--sparse=always", "--remove-destination", "--", src_path + "/.", dst_path]),
             f"copy {src_path} to {dst_path}", bulk=True)


def _vm_dir(path: str, below: str = "") -> None:
    """`path` is a VM directory (`.../<sys_ds>/<vm>`), or `below` names what in one it may be."""
    if not re.search(rf"/[0-9]+/[0-9]+{below}$", path):
        raise DriverError(f"refusing to touch '{path}': not a VM directory{' or its backup directory' if below else ''}")


def remove_dir(host: Host, path: str, check: bool = True) -> None:
    """A VM directory, or the backup directory in one."""
    _vm_dir(path, below="(/backup)?")
    host.run(["rm", "-rf", path], f"remove {path}", check=check)


def fresh_dir(host: Host, path: str) -> None:
    """An empty backup directory in a VM directory (what an earlier run left goes first)."""
    _vm_dir(path, below="/backup")
    host.run(Shell.join(["rm", "-rf", path], "&&", ["mkdir", "-p", path]), f"prepare {path}")


def write_file(host: Host, path: str, data: bytes) -> None:
    """A small file written whole (a temporary name, then renamed)."""
    host.run(Shell.join(["cat"], ">", [path + ".part"], "&&", ["mv", "-f", path + ".part", path]),
             f"write {path}", stdin=data)


VTPM_SETUP = "/var/tmp/one/vtpm_setup"      # OpenNebula's vTPM helper on the hosts (7.2+)


def save_tpm(host: Host, domain: str, vm_dir: str, backup_dir: str) -> None:
    """The VM's vTPM state into the backup, as OpenNebula's own drivers save it (backup_kvm.rb
    save_tpm_sh): vtpm_setup's `backup` where oneadmin may run it with sudo, then the VM
    directory's `tpm` folder as `disk.tpm.0`, which the backup datastores carry along."""
    _vm_dir(vm_dir)
    _vm_dir(backup_dir, below="/backup")
    host.run(Shell.join(["sudo", "-l"], "2>/dev/null", "|", ["grep", "-q", "vtpm_setup"], "&&",
                        ["sudo", VTPM_SETUP, "backup", domain, vm_dir], ";",
                        ["tar", "zcf", f"{backup_dir}/disk.tpm.0", "-C", vm_dir, "tpm"]),
             f"save the vTPM state of {domain}")


def restore_tpm(host: Host, vm_dir: str, tgz: str) -> None:
    """A backup's vTPM state back into the VM directory (backup_kvm.rb restore_tpm_sh: the VM is
    off; its VMM sets it up when it starts)."""
    _vm_dir(vm_dir)
    host.run(Shell.join(["rm", "-rf", f"{vm_dir}/tpm"], "&&", ["tar", "zxf", "-", "-C", vm_dir]),
             f"restore the vTPM state into {vm_dir}", stdin=tgz_bytes(tgz))


def tgz_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()
