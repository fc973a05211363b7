"""The demo: a whole VM storage lifecycle through the real driver executables, against the lab.

    bash lab/run demo            (as root on Debian 12)

Every driver call is made by the lab's runner exactly as oned 7.0 would make it; the oned objects
(VM, images, datastores) are updated between steps the way oned updates them. Hypervisor steps
that belong to OpenNebula's stock kvm driver (deploy, poweroff) are done with virsh on the host.
A step whose driver actions do not exist yet is reported as "not implemented"; a step that needs
an earlier step that did not succeed is "skipped". Nothing is faked, and nothing is left behind.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable

from .lab import FRONTEND, IMAGE_DS, SYSTEM_DS, Lab, LabConfig
from .oned import VM, Disk, History, Image
from .runner import Result, ds_action_data, vmm_action_data
from .oned import to_xml

VM_ID = 0
SYS_DIR = f"/var/lib/one//datastores/{SYSTEM_DS}/{VM_ID}"
PATTERN = b"linstor_un demo pattern " * 170       # ~4 KiB written at offset 0 and at 1 MiB


class StepFailed(Exception):
    pass


@dataclass
class Step:
    name: str
    actions: list[str]                  # driver files used, e.g. "tm/clone", "datastore/cp"
    run: Callable[["Demo"], str]
    needs: list[str] = field(default_factory=list)


@dataclass
class Row:
    step: str
    actions: str
    seconds: float = 0.0
    linstor_calls: int = 0
    result: str = ""


class Demo:
    def __init__(self, lab: Lab):
        self.lab = lab
        self.r = lab.runner()
        self.images: dict[int, Image] = {}
        self.vm = VM(VM_ID, name="demo-vm", state="ACTIVE", lcm_state="PROLOG",
                     history=[History("node1", SYSTEM_DS)])
        self.driver_seconds = 0.0
        self.host = "node1"

    # ---- helpers ---------------------------------------------------------------------------------
    def call(self, result: Result, what: str) -> Result:
        self.driver_seconds += result.seconds
        if not result.ok:
            last = (result.stderr.strip().splitlines() or ["(no message)"])[-1]
            raise StepFailed(f"{what}: exit {result.rc}: {last}")
        return result

    def ds(self, action: str, image: Image) -> Result:
        data = ds_action_data(to_xml(image.element()), to_xml(self.lab.oned.datastores[IMAGE_DS].element()))
        return self.call(self.r.ds(action, data, image.id), f"datastore/{action}")

    def tm(self, action: str, *args) -> Result:
        return self.call(self.r.tm(action, *args), f"tm/{action}")

    def publish(self) -> None:
        self.lab.oned.add(self.vm)
        for image in self.images.values():
            self.lab.oned.add(image)

    def disk(self, disk_id: int) -> Disk:
        return next(d for d in self.vm.disks if d.disk_id == disk_id)

    def set_state(self, state: str, lcm: str = "LCM_INIT") -> None:
        self.vm.state, self.vm.lcm_state = state, lcm
        self.publish()

    def on_host(self, host: str, command: str, input: bytes = b"") -> bytes:
        out = self.lab.host(host).run_inside(command, check=False, input=input)
        if out.returncode != 0:
            raise StepFailed(f"on {host}: {command}: {out.stderr.decode().strip()}")
        return out.stdout

    def read_disk(self, host: str, disk_id: int, offset: int, length: int) -> bytes:
        return self.on_host(host, f"dd if={SYS_DIR}/disk.{disk_id} bs=4096 iflag=skip_bytes,count_bytes "
                                  f"skip={offset} count={length} status=none")

    def write_disk(self, host: str, disk_id: int, offset: int, data: bytes) -> None:
        self.on_host(host, f"dd of={SYS_DIR}/disk.{disk_id} bs=4096 oflag=seek_bytes seek={offset} "
                           f"conv=notrunc,fsync status=none", input=data)

    def virsh(self, host: str, command: str) -> bytes:
        return self.on_host(host, f"virsh -c qemu:///system {command}")

    def domain_xml(self) -> str:
        disks = []
        for d in self.vm.disks:
            dev = "vd" + "abcdefgh"[d.disk_id]
            disks.append(f"<disk type='block' device='disk'><driver name='qemu' type='raw' cache='none'/>"
                         f"<source dev='{SYS_DIR}/disk.{d.disk_id}'/><target dev='{dev}' bus='virtio'/></disk>")
        disks.append(f"<disk type='file' device='cdrom'><driver name='qemu' type='raw'/>"
                     f"<source file='{SYS_DIR}/disk.4'/><target dev='hda' bus='ide'/><readonly/></disk>")
        return (f"<domain type='qemu'><name>one-{VM_ID}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>"
                f"<os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>"
                f"<devices>{''.join(disks)}</devices></domain>")

    def boot(self, host: str) -> None:
        """What the stock kvm deploy does: define the domain from the VM's disk paths and start it."""
        path = f"{SYS_DIR}/deployment.0"
        self.on_host(host, f"cat > {path}", input=self.domain_xml().encode())
        self.virsh(host, f"create {path}")
        self.set_state("ACTIVE", "RUNNING")

    def vmm_data(self, host: str) -> str:
        return vmm_action_data(to_xml(self.vm.element()), to_xml(self.lab.oned.datastores[SYSTEM_DS].element()),
                               host, f"one-{VM_ID}", f"{SYS_DIR}/checkpoint")

    # ---- steps -----------------------------------------------------------------------------------
    def import_image(self) -> str:
        src = self.lab.workdir / "images" / "base.raw"
        src.parent.mkdir(exist_ok=True)
        with open(src, "wb") as f:
            f.truncate(256 << 20)
            f.write(PATTERN)
            f.seek(1 << 20)
            f.write(PATTERN)
        qcow2 = src.with_suffix(".qcow2")
        subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(src), str(qcow2)], check=True)
        self.lab.oned.datastores[IMAGE_DS].template["SAFE_DIRS"] = str(src.parent)
        image = Image(0, "demo-os", IMAGE_DS, path=str(qcow2), format="", size=256, state=4)
        size = self.ds("stat", Image(-1, "", IMAGE_DS, path=str(qcow2))).stdout.strip()
        out = self.ds("cp", image).stdout.split()
        if len(out) != 2:
            raise StepFailed(f"cp printed {out!r}, expected 'SOURCE FORMAT'")
        image.source, image.format, image.state = out[0], out[1], 1
        self.images[0] = image
        self.publish()
        return f"SOURCE={image.source} FORMAT={image.format} (stat: {size} MB)"

    def create_datablock(self) -> str:
        image = Image(1, "demo-data", IMAGE_DS, format="raw", size=64, persistent=True, type=2, state=4)
        image.source = self.ds("mkfs", image).stdout.strip()
        image.state = 1
        self.images[1] = image
        self.publish()
        return f"SOURCE={image.source}"

    def deploy(self) -> str:
        img0, img1 = self.images[0], self.images[1]
        self.vm.disks = [Disk(0, IMAGE_DS, image_id=0, source=img0.source, size=512),
                         Disk(1, IMAGE_DS, image_id=1, source=img1.source, size=64, persistent=True),
                         Disk(2, SYSTEM_DS, type="fs", fs="ext4", size=64),
                         Disk(3, SYSTEM_DS, type="swap", size=32)]
        self.vm.context = {"DISK_ID": 4, "TARGET": "hda", "NETWORK": "NO"}
        img0.vms, img1.vms, img1.state = [VM_ID], [VM_ID], 8
        self.set_state("ACTIVE", "PROLOG")
        h = self.host
        self.tm("clone", f"{FRONTEND}:{img0.source}", f"{h}:{SYS_DIR}/disk.0", VM_ID, IMAGE_DS)
        self.tm("ln", f"{FRONTEND}:{img1.source}", f"{h}:{SYS_DIR}/disk.1", VM_ID, IMAGE_DS)
        self.tm("mkimage", 64, "raw", f"{h}:{SYS_DIR}/disk.2", VM_ID, SYSTEM_DS)
        self.tm("mkswap", 32, f"{h}:{SYS_DIR}/disk.3", VM_ID, SYSTEM_DS)
        context = self.lab.one_location / "var" / "vms" / str(VM_ID) / "context.sh"
        context.parent.mkdir(parents=True, exist_ok=True)
        context.write_text("HOSTNAME='demo-vm'\n")
        self.tm("context", str(context), f"{h}:{SYS_DIR}/disk.4", VM_ID, SYSTEM_DS)
        if self.read_disk(h, 0, 0, len(PATTERN)) != PATTERN or self.read_disk(h, 0, 1 << 20, len(PATTERN)) != PATTERN:
            raise StepFailed("disk.0 does not hold the image's bytes")
        fs = self.on_host(h, f"blkid -o value -s TYPE {SYS_DIR}/disk.2").strip()
        swap = self.on_host(h, f"blkid -o value -s TYPE {SYS_DIR}/disk.3").strip()
        if fs != b"ext4" or swap != b"swap":
            raise StepFailed(f"volatile disks: disk.2 is {fs!r}, disk.3 is {swap!r}")
        self.boot(h)
        return "disk.0 = image bytes; disk.2 ext4; disk.3 swap; domain running"

    def poweroff(self) -> None:
        self.virsh(self.host, f"destroy one-{VM_ID}")
        self.set_state("POWEROFF")

    def snapshot_revert(self) -> str:
        self.poweroff()
        self.set_state("ACTIVE", "DISK_SNAPSHOT_POWEROFF")
        self.tm("snap_create", f"{self.host}:{SYS_DIR}/disk.0", 0, VM_ID, IMAGE_DS)
        self.disk(0).snapshots = [{"id": 0, "active": True}]
        self.set_state("POWEROFF")
        self.write_disk(self.host, 0, 0, b"X" * len(PATTERN))            # the guest writes after the snapshot
        self.write_disk(self.host, 0, 8 << 20, b"Y" * 4096)
        self.set_state("ACTIVE", "DISK_SNAPSHOT_REVERT_POWEROFF")
        self.tm("snap_revert", f"{self.host}:{SYS_DIR}/disk.0", 0, VM_ID, IMAGE_DS)
        self.set_state("POWEROFF")
        if self.read_disk(self.host, 0, 0, len(PATTERN)) != PATTERN:
            raise StepFailed("revert did not bring back the snapshot's bytes")
        if self.read_disk(self.host, 0, 8 << 20, 4096) != b"\0" * 4096:
            raise StepFailed("revert left bytes written after the snapshot")
        return "bytes after revert = bytes at snapshot (zeros included)"

    def resize(self) -> str:
        self.set_state("ACTIVE", "DISK_RESIZE_POWEROFF")
        self.tm("resize", f"{self.host}:{SYS_DIR}/disk.0", 1024, VM_ID, IMAGE_DS)
        self.disk(0).size = 1024
        self.set_state("POWEROFF")
        size = int(self.on_host(self.host, f"blockdev --getsize64 {SYS_DIR}/disk.0"))
        if size < 1024 << 20:
            raise StepFailed(f"disk.0 is {size} bytes after resize to 1024 MB")
        return f"disk.0 is {size >> 20} MiB"

    def migrate(self) -> str:
        src, dst = self.host, "node2"
        self.set_state("ACTIVE", "PROLOG_MIGRATE_POWEROFF")
        for d in self.vm.disks:
            ds = IMAGE_DS if d.image_id is not None else SYSTEM_DS
            self.tm("mv", f"{src}:{SYS_DIR}/disk.{d.disk_id}", f"{dst}:{SYS_DIR}/disk.{d.disk_id}", VM_ID, ds)
        self.tm("mv", f"{src}:{SYS_DIR}", f"{dst}:{SYS_DIR}", VM_ID, SYSTEM_DS)
        self.vm.history.append(History(dst, SYSTEM_DS))
        self.host = dst
        self.tm("context", str(self.lab.one_location / "var" / "vms" / str(VM_ID) / "context.sh"),
                f"{dst}:{SYS_DIR}/disk.4", VM_ID, SYSTEM_DS)
        if self.read_disk(dst, 0, 0, len(PATTERN)) != PATTERN:
            raise StepFailed("disk.0 on the new host does not hold the VM's bytes")
        self.boot(dst)
        return f"{src} -> {dst}, running there"

    def save_restore(self) -> str:
        self.set_state("ACTIVE", "SAVE_SUSPEND")
        self.call(self.r.save(f"one-{VM_ID}", f"{SYS_DIR}/checkpoint", self.host, VM_ID,
                              self.vmm_data(self.host)), "vmm/kvm/save_linstor_un")
        self.set_state("SUSPENDED")
        state = self.lab.host(self.host).run_inside(f"virsh -c qemu:///system domstate one-{VM_ID}", check=False)
        if state.returncode == 0 and b"running" in state.stdout:
            raise StepFailed("the domain still runs after save")
        self.set_state("ACTIVE", "BOOT_SUSPENDED")
        self.call(self.r.restore(f"{SYS_DIR}/checkpoint", self.host, f"one-{VM_ID}", VM_ID,
                                 self.vmm_data(self.host)), "vmm/kvm/restore_linstor_un")
        if b"running" not in self.virsh(self.host, f"domstate one-{VM_ID}"):
            raise StepFailed("the domain is not running after restore")
        self.set_state("ACTIVE", "RUNNING")
        return "saved to LINSTOR, restored, running"

    def vm_snapshot(self) -> str:
        """onevm snapshot-create, the guest writes, snapshot-revert, snapshot-delete."""
        before = self.read_disk(self.host, 2, 1 << 20, 4096)
        snap = self.vm.new_snapshot()
        self.set_state("ACTIVE", "HOTPLUG_SNAPSHOT")
        made = self.call(self.r.vm_snapshot("create", f"one-{VM_ID}", str(snap["SNAPSHOT_ID"]), VM_ID, self.host,
                                            self.vmm_data(self.host)), "vmm/kvm/snapshot_create_linstor_un")
        snap["HYPERVISOR_ID"] = made.stdout.split()[0]
        pause = next((line.split("paused ", 1)[1].split(" s", 1)[0] for line in made.stderr.splitlines()
                      if " paused " in line), "?")
        self.write_disk(self.host, 2, 1 << 20, b"\x5a" * 4096)
        self.vm.activate_snapshot(int(snap["SNAPSHOT_ID"]), "REVERT")
        self.publish()
        self.call(self.r.vm_snapshot("revert", f"one-{VM_ID}", snap["HYPERVISOR_ID"], VM_ID, self.host,
                                     self.vmm_data(self.host)), "vmm/kvm/snapshot_revert_linstor_un")
        if self.read_disk(self.host, 2, 1 << 20, 4096) != before:
            raise StepFailed("disk.2 does not hold the snapshot's bytes after the revert")
        if b"running" not in self.virsh(self.host, f"domstate one-{VM_ID}"):
            raise StepFailed("the domain is not running after the revert")
        self.vm.activate_snapshot(int(snap["SNAPSHOT_ID"]), "DELETE")
        self.publish()
        self.call(self.r.vm_snapshot("delete", f"one-{VM_ID}", snap["HYPERVISOR_ID"], VM_ID, self.host,
                                     self.vmm_data(self.host)), "vmm/kvm/snapshot_delete_linstor_un")
        self.vm.snapshots.clear()
        self.set_state("ACTIVE", "RUNNING")
        return f"guest paused {pause} s; reverted (disks and memory), running; deleted"

    def save_as(self) -> str:
        image = Image(2, "demo-saveas", IMAGE_DS, format="raw", size=self.disk(0).size, state=4,
                      template={"SAVED_DISK_ID": 0, "SAVED_IMAGE_ID": 0, "SAVED_VM_ID": VM_ID})
        image.source = self.ds("mkfs", image).stdout.strip()
        self.images[2] = image
        self.set_state("ACTIVE", "HOTPLUG_SAVEAS")
        self.tm("cpds", f"{self.host}:{SYS_DIR}/disk.0", image.source, -1, VM_ID, IMAGE_DS)
        image.state = 1
        self.set_state("ACTIVE", "RUNNING")
        return f"image 2 = {image.source}"

    def backup(self) -> str:
        """onevm backup twice (INCREMENT mode, running) of the persistent and the volatile disk: a
        full backup, guest writes, an increment; each one restored as OpenNebula's backup
        datastore gives it back, and compared with the disk."""
        from .backup_ds import BackupDatastore
        bds = BackupDatastore(self.lab)
        self.vm.backup_config = {"MODE": "INCREMENT", "LAST_INCREMENT_ID": -1, "FS_FREEZE": "AGENT"}
        checked = []
        for step in ("full", "increment"):
            if step == "increment":
                self.write_disk(self.host, 1, 3 << 20, os.urandom(1 << 20))
            run = bds.backup(self.r, self.vm, [1, 2], live=True, host=self.host)
            self.driver_seconds += run.pre.seconds + (run.post.seconds if run.post else 0)
            if not run.ok:
                last = ((run.pre.stderr if not run.pre.ok else run.error).strip().splitlines()
                        or ["(no message)"])[-1]
                raise StepFailed(f"backup: {last}")
            for d in (1, 2):
                size = self.disk(d).size << 20
                restored = bds.restored_bytes(run.image_id, d, run.increment)
                if restored[:size] != self.read_disk(self.host, d, 0, size):
                    raise StepFailed(f"{step}: the restored disk {d} differs from the disk")
            checked.append(f"{step} {run.increment}")
        self.publish()
        return f"{', '.join(checked)} restored byte-exact"

    def terminate(self) -> str:
        self.virsh(self.host, f"destroy one-{VM_ID}")
        self.set_state("ACTIVE", "EPILOG")
        h = self.host
        self.tm("delete", f"{h}:{SYS_DIR}/disk.0", VM_ID, IMAGE_DS)
        self.tm("mvds", f"{h}:{SYS_DIR}/disk.1", self.images[1].source, VM_ID, IMAGE_DS)
        self.tm("delete", f"{h}:{SYS_DIR}/disk.2", VM_ID, SYSTEM_DS)
        self.tm("delete", f"{h}:{SYS_DIR}/disk.3", VM_ID, SYSTEM_DS)
        self.tm("delete", f"{h}:{SYS_DIR}", VM_ID, SYSTEM_DS)
        self.set_state("DONE")
        for image in self.images.values():
            image.vms, image.state = [], 1
        self.publish()
        if self.lab.host(h).run_inside(f"test -e {SYS_DIR}", check=False).returncode == 0:
            raise StepFailed(f"{SYS_DIR} still exists on {h}")
        return "VM disks and directory gone"

    def delete_images(self) -> str:
        for image in list(self.images.values()):
            self.ds("rm", image)
        with self.lab.client() as c:
            left = [r.name for r in c.resource_dfn_list_raise().resource_definitions]
        if left:
            raise StepFailed(f"resource definitions left in LINSTOR: {left}")
        return "LINSTOR is empty again"


STEPS = [
    Step("import a qcow2 image", ["datastore/stat", "datastore/cp"], Demo.import_image),
    Step("create a persistent datablock", ["datastore/mkfs"], Demo.create_datablock),
    Step("deploy: non-persistent, persistent, volatile, swap, context",
         ["tm/clone", "tm/ln", "tm/mkimage", "tm/mkswap", "tm/context"], Demo.deploy,
         ["import a qcow2 image", "create a persistent datablock"]),
    Step("disk snapshot, guest writes, revert", ["tm/snap_create", "tm/snap_revert"], Demo.snapshot_revert,
         ["deploy: non-persistent, persistent, volatile, swap, context"]),
    Step("resize disk.0", ["tm/resize"], Demo.resize,
         ["deploy: non-persistent, persistent, volatile, swap, context"]),
    Step("cold migrate node1 -> node2", ["tm/mv", "tm/context"], Demo.migrate,
         ["deploy: non-persistent, persistent, volatile, swap, context"]),
    Step("suspend (save) and resume (restore)", ["vmm/kvm/save_linstor_un", "vmm/kvm/restore_linstor_un"],
         Demo.save_restore, ["cold migrate node1 -> node2"]),
    Step("VM snapshot, guest writes, revert, delete",
         ["vmm/kvm/snapshot_create_linstor_un", "vmm/kvm/snapshot_revert_linstor_un",
          "vmm/kvm/snapshot_delete_linstor_un"], Demo.vm_snapshot, ["suspend (save) and resume (restore)"]),
    Step("save-as (live)", ["datastore/mkfs", "tm/cpds"], Demo.save_as, ["cold migrate node1 -> node2"]),
    Step("backup live, full and an increment", ["tm/prebackup_live", "tm/postbackup_live"], Demo.backup,
         ["cold migrate node1 -> node2"]),
    Step("terminate", ["tm/delete", "tm/mvds"], Demo.terminate,
         ["deploy: non-persistent, persistent, volatile, swap, context"]),
    Step("delete the images", ["datastore/rm"], Demo.delete_images, ["import a qcow2 image"]),
]


def implemented(lab: Lab, action: str) -> bool:
    kind, _, name = action.partition("/")
    rel = action if kind == "vmm" else f"{kind}/linstor_un/{name}"
    return (lab.one_location / "var" / "remotes" / rel).exists()


def run_demo(out=sys.stdout) -> list[Row]:
    rows: list[Row] = []
    good: set[str] = set()
    with Lab(LabConfig(hosts=3, libvirt=True)) as lab:
        demo = Demo(lab)
        for step in STEPS:
            row = Row(step.name, ", ".join(step.actions))
            rows.append(row)
            missing = [a for a in step.actions if not implemented(lab, a)]
            if missing:
                row.result = "not implemented: " + ", ".join(missing)
                continue
            blocked = [n for n in step.needs if n not in good]
            if blocked:
                row.result = "skipped (needs: " + "; ".join(blocked) + ")"
                continue
            before = len(lab.linstor.requests())
            demo.driver_seconds = 0.0
            try:
                row.result = "ok: " + step.run(demo)
                good.add(step.name)
            except StepFailed as err:
                row.result = f"FAILED: {err}"
            except Exception as err:      # a bug in the demo itself: show it, go on
                row.result = f"ERROR: {err!r}"
                traceback.print_exc(file=sys.stderr)
            row.seconds = demo.driver_seconds
            row.linstor_calls = len(lab.linstor.requests()) - before
    print_table(rows, out)
    return rows


def print_table(rows: list[Row], out) -> None:
    headers = ("step", "driver actions", "driver time", "LINSTOR calls", "result")
    cells = [(r.step, r.actions, f"{r.seconds:.2f}s" if r.seconds else "-",
              str(r.linstor_calls) if r.linstor_calls else "-", r.result) for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers[:-1])]
    line = "  ".join(h.ljust(w) for h, w in zip(headers[:-1], widths)) + "  " + headers[-1]
    print(line, file=out)
    print("-" * len(line), file=out)
    for c in cells:
        print("  ".join(v.ljust(w) for v, w in zip(c[:-1], widths)) + "  " + c[-1], file=out)
    done = sum(r.result.startswith("ok") for r in rows)
    print(f"\n{done} of {len(rows)} steps ok", file=out)


def main() -> int:
    if os.geteuid() != 0:
        print("the demo needs root (see README)", file=sys.stderr)
        return 1
    start = time.monotonic()
    rows = run_demo()
    print(f"demo finished in {time.monotonic() - start:.1f}s; lab torn down")
    return 0 if not any(r.result.startswith(("FAILED", "ERROR")) for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
