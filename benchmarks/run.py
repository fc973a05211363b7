"""Per-action cost of the TM actions in the lab: wall time (median, p90), LINSTOR requests, SSH
connections, remote commands, and start-up time before main() (interpreter + imports).

    .venv/bin/python -m benchmarks.run [--runs 20] [--json benchmarks/results.json]

Each measured run is one action exactly as oned runs it, on state prepared outside the
measurement. Counts come from the action itself (LINSTOR_UN_STATS) and from the emulator's
request log. The "minimum" columns are the fewest requests/commands the action could possibly
need, and why; a count above minimum + 1 is a finding to explain or fix.
"""
from __future__ import annotations

import argparse
import json
import statistics
import re
import sys
import tempfile
import time
from types import SimpleNamespace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lab.lab import FRONTEND, IMAGE_DS, SYSTEM_DS, Lab, LabConfig  # noqa: E402
from lab.oned import VM, Disk, History, to_xml  # noqa: E402

SYS = f"/var/lib/one//datastores/{SYSTEM_DS}"

# fewest LINSTOR requests / remote commands each action could need in the measured case (with
# the reason). python-linstor's connect() adds two requests to every action that talks to LINSTOR
# (an https-redirect probe and the API version check): counted in http_requests, not here.
MINIMUM = {
    "ln": (4, 1, "list (a replica on the host already? a disk left anywhere?), make-available, list (the "
                 "device); owner props (persistent image); one remote ln"),
    "mvds": (3, 1, "list (is the host's replica diskless?); clear owner props; list snapshots (clear the "
                   "VM's props they copied, remove its backup chain); one remote rm"),
    "delete": (4, 1, "list (the shared image's replica stays: another VM disk there uses it); read the "
                     "definition and clear the VM's owner properties (a persistent image: monitoring would report "
                     "it for a VM that is gone); list snapshots (this VM's backup chain on the image goes); one "
                     "remote rm"),
    "resize": (3, 0, "read the volume size (refuse shrinking) + resize + list the replicas (every device "
                     "offers the new size: LINSTOR records it before its satellites make it)"),
    "snap_create": (4, 0, "ownership token on the definition (the snapshot copies it); create the snapshot; "
                          "list (its allocated size); record the size and clear the token"),
    "snap_delete": (3, 0, "list snapshots (is it this disk's?), clear the snapshot's size property, delete it"),
    "premigrate": (2, 3, "list (the destination has a replica already: its device); allow two primaries; "
                         "ln, tar out, tar in"),
    "postmigrate": (2, 2, "clear two primaries; list (the source keeps its diskful replica); rm link, rm dir"),
    "failmigrate": (3, 2, "clear two primaries; list + delete the destination's diskless replica; rm link, rm dir"),
    "clone (snapshot)": (10, 1, "token on the image, snapshot, RD create (marked), VD restore, resource restore, "
                                "read the new definition (the restore copies the image's properties onto it: "
                                "only its own marks stay), clear the image's token, list + make-available + list "
                                "(device), owner props (complete); one remote ln"),
    "clone (copy)": (8, 1, "both definitions, the image's replicas and the datastore's resource group (does "
                           "LINSTOR's clone place as the datastore would?), clone + its status, make-available, "
                           "list (device), owner props; one remote ln (no bytes through the host)"),
    "mkimage": (4, 1, "spawn, list (a replica on the host? its device), make-available + list where it has "
                      "none, owner props; one remote mkfs+ln"),
    "mkswap": (4, 2, "as mkimage; mkswap, ln"),
    "context": (0, 1, "the context ISO is a file in the VM directory (as in the bash driver); "
                      "one remote write"),
    "mv (disk to another host)": (4, 2, "new host: make-available + list (device); old host: list + "
                                  "delete its diskless replica; rm link on the old host, ln on the new"),
    "cpds": (8, 1, "read both definitions (sizes), list the disk's replicas (device), resize the image "
                   "(smaller than the disk here); the image is not on the VM's host: list, make-available, list "
                   "(device), mark it temporary, delete it after; one dd"),
    "snap_revert": (6, 0, "list snapshots (which, whose) and replicas (may LINSTOR roll back?), read the "
                          "definition, rollback, read it again and put back the properties LINSTOR 1.31+ merges "
                          "in from the snapshot (its delete + restore); 3 before 1.31 (VM powered off: no host "
                          "command)"),
    "tm monitor": (4, 0, "resource group, its pools, definitions of this datastore, their replicas: "
                         "constant, whatever the count"),
    "ds stat": (0, 0, "a local file: stat on the front-end"),
    "ds cp (64 MiB raw)": (3, 1, "spawn (marked), list (a bridge with a disk, its device), mark complete; "
                                 "one dd fed by the stream"),
    "ds mkfs": (3, 1, "spawn (marked), list (a bridge with a disk, its device), mark complete; one mkfs"),
    "ds clone": (4, 0, "LINSTOR's clone (marked) + its status, list its replicas (LINSTOR copies the source's "
                       "attachments too), mark complete (no bytes through a host)"),
    "ds rm": (4, 0, "read the definition, list replicas (refuse in use), list snapshots (refuse while "
                    "VM disks are cloned from it), delete"),
    "ds monitor": (2, 0, "resource group (its pools) + one storage-pool listing"),
    "ds export": (1, 1, "list (a node with a disk, its device); one md5sum"),
    "ds snap_revert": (5, 0, "as snap_revert (properties to put back only if the snapshot's copy differs)"),
    "ds snap_flatten": (7, 0, "as ds snap_revert, then one delete per snapshot (2 here)"),
    "ds snap_delete": (3, 0, "list snapshots (is it this image's?), clear its size property, delete it"),
    "save (vmm)": (4, 2, "spawn the checkpoint volume (marked), make-available, list (device), mark complete; "
                         "virsh save, ln"),
    "restore (vmm)": (3, 3, "read the definition (is it this VM's complete checkpoint?), list (its replica on "
                            "the host: the device), delete the volume; read the saved XML, write it with this "
                            "datastore's paths, virsh restore"),
    "snap_create_live": (4, 2, "as snap_create; domfsfreeze, domfsthaw"),
}

# counts above minimum + 1, and why they stay
ABOVE_MINIMUM = {
    "cpds": "+ the temporary replica is read again under the lock before it is deleted (a VM may have "
            "attached it meanwhile) and after (LINSTOR may keep it as its tie-breaker: the mark is then "
            "cleared), + the VM disk's own replica is read under the lock",
    "mv (disk to another host)": "+ node list (is each end a LINSTOR node or the front-end in a stop/"
                                 "undeploy?) + definition read (does the system datastore change?)",
}


class Bench:
    def __init__(self, lab: Lab, stats: Path):
        self.lab = lab
        self.stats = stats
        self.r = lab.runner()
        self.r.env["LINSTOR_UN_STATS"] = str(stats)
        self.vm_id = 1000
        with lab.client() as c:
            c.resource_group_spawn("one_rg", "one-image-1", [64 * 1024])
            c.resource_group_spawn("one_rg", "one-image-2", [64 * 1024])
        self.lab.oned.add(__import__("lab.oned", fromlist=["Image"]).Image(
            1, "img", IMAGE_DS, source="/dev/drbd/by-res/one-image-1/0", size=64))

    def new_vm(self, host="node1", persistent=False, lcm="RUNNING"):
        self.vm_id += 1
        src = "/dev/drbd/by-res/one-image-2/0" if persistent else "/dev/drbd/by-res/one-image-1/0"
        vm = VM(self.vm_id, lcm_state=lcm, history=[History(host, SYSTEM_DS)],
                disks=[Disk(0, IMAGE_DS, image_id=2 if persistent else 1, source=src, size=64,
                            persistent=persistent)])
        self.lab.oned.add(vm)
        return vm

    def new_vm_with_volatile(self):
        """A VM whose disk 1 is the volatile disk mkimage/mkswap make (oned has it before it asks)."""
        vm = self.new_vm()
        vm.disks.append(Disk(1, SYSTEM_DS, size=64))
        return vm

    def start(self) -> None:
        """Just before the measured action: empty the stats file and the emulator's request log."""
        self.stats.write_text("")
        self.lab.linstor.clear_requests()

    def measure(self, result) -> dict:
        if not result.ok:
            raise RuntimeError(str(result))
        lines = self.stats.read_text().splitlines()
        self.stats.write_text("")
        s = json.loads(lines[-1]) if lines else {"linstor_requests": 0, "ssh_connections": 0,
                                                  "remote_commands": 0, "startup_seconds": 0}
        s["seconds"] = result.seconds
        # what the controller saw, python-linstor's two connect-time requests included
        s["http_requests"] = len(self.lab.linstor.requests())
        return s

    def path(self, vm, disk=0):
        return f"{SYS}/{vm.id}/disk.{disk}"

    def image_id(self) -> int:
        self.vm_id += 1
        return self.vm_id

    def ds(self, action: str, image) -> "object":
        from lab.runner import ds_action_data
        data = ds_action_data(to_xml(image.element()), to_xml(self.lab.oned.datastores[IMAGE_DS].element()))
        return self.r.ds(action, data, image.id)

    def spawn_image(self, snapshots: int = 0, nodes: tuple = ()):
        import linstor
        from lab.oned import Image
        image_id = self.image_id()
        name = f"one-image-{image_id}"
        with self.lab.client() as c:
            if nodes:
                c.resource_dfn_create(name, resource_group="one_rg")
                c.volume_dfn_create(name, 16 * 1024)
                c.resource_create([linstor.ResourceData(n, name, storage_pool="data") for n in nodes])
            else:
                c.resource_group_spawn("one_rg", name, [16 * 1024])
            for n in range(snapshots):
                c.snapshot_create(None, name, f"snapshot-{n}")
        return Image(image_id, name, IMAGE_DS, source=f"/dev/drbd/by-res/{name}/0", size=16, target_snapshot=0,
                     snapshots=[{"id": n, "active": n == snapshots - 1} for n in range(snapshots)])


def scenarios(b: Bench):
    """name -> (prepare() -> ctx, run(ctx) -> Result)"""
    r = b.r

    def clone_vm():
        vm = b.new_vm()
        assert r.tm("clone", f"{FRONTEND}:/dev/drbd/by-res/one-image-1/0", f"node1:{b.path(vm)}", vm.id, IMAGE_DS).ok
        return vm

    def ln_vm():
        vm = b.new_vm(persistent=True)
        return vm

    def linked_vm():
        vm = ln_vm()
        assert r.tm("ln", f"{FRONTEND}:/dev/drbd/by-res/one-image-2/0", f"node3:{b.path(vm)}", vm.id, IMAGE_DS).ok
        return vm

    def with_snapshot():
        vm = clone_vm()
        assert r.tm("snap_create", f"node1:{b.path(vm)}", 0, vm.id, IMAGE_DS).ok
        return vm

    def migrating():
        vm = clone_vm()
        return vm, to_xml(vm.element())

    def migrated():
        vm, xml = migrating()
        assert r.migrate("premigrate", "node1", "node2", f"{SYS}/{vm.id}", vm.id, SYSTEM_DS, xml).ok
        return vm, xml

    def snapshot_mode():
        b.lab.oned.datastores[SYSTEM_DS].template["CLONE_MODE"] = "snapshot"
        return b.new_vm()

    def copy_mode():
        b.lab.oned.datastores[SYSTEM_DS].template["CLONE_MODE"] = "copy"
        return b.new_vm()

    from lab.oned import Image
    images = b.lab.workdir / "bench-images"
    images.mkdir(exist_ok=True)
    raw = images / "small.raw"
    with open(raw, "wb") as f:
        f.truncate(64 << 20)
        f.write(b"linstor_un" * 400)
    b.lab.oned.datastores[IMAGE_DS].template["SAFE_DIRS"] = str(images)
    context_file = b.lab.one_location / "var" / "bench-context.sh"
    context_file.write_text("HOSTNAME='bench'\n")

    def moved_disk():
        vm = clone_vm()
        vm.lcm_state = "PROLOG_MIGRATE_POWEROFF"
        b.lab.oned.add(vm)
        return vm

    def powered_off_with_snapshot():
        vm = with_snapshot()
        vm.lcm_state = "DISK_SNAPSHOT_REVERT_POWEROFF"
        vm.disks[0].snapshots = [{"id": 0, "active": True}]
        b.lab.oned.add(vm)
        return vm

    def save_as():
        vm = clone_vm()
        vm.lcm_state, vm.state = "HOTPLUG_SAVEAS_POWEROFF", "POWEROFF"
        b.lab.oned.add(vm)
        return vm, b.spawn_image(nodes=("node2", "node3"))     # as DS mkfs would: not on the VM's host

    def datablock():
        return Image(b.image_id(), "db", IMAGE_DS, format="raw", fs="ext4", size=16, type=2)

    def copy_of():
        src = b.spawn_image()
        return Image(b.image_id(), "copy", IMAGE_DS, path=src.source, size=16, cloning_id=src.id)

    from lab.runner import ds_action_data

    def tm_monitor(_):
        ds = b.lab.oned.datastores[SYSTEM_DS]
        return r.tm_monitor(ds_action_data("", to_xml(ds.element()), "<MONITOR_VM_DISKS>1</MONITOR_VM_DISKS>"),
                            SYSTEM_DS)

    return {
        "mkswap": (b.new_vm_with_volatile, lambda vm: r.tm("mkswap", 16, f"node1:{SYS}/{vm.id}/disk.1", vm.id, SYSTEM_DS)),
        "context": (b.new_vm, lambda vm: r.tm("context", str(context_file), f"node1:{SYS}/{vm.id}/disk.2",
                                              vm.id, SYSTEM_DS)),
        "mv (disk to another host)": (moved_disk, lambda vm: r.tm("mv", f"node1:{b.path(vm)}", f"node2:{b.path(vm)}",
                                                                  vm.id, IMAGE_DS)),
        "cpds": (save_as, lambda c: r.tm("cpds", f"node1:{b.path(c[0])}", c[1].source, -1, c[0].id, IMAGE_DS)),
        "snap_revert": (powered_off_with_snapshot, lambda vm: r.tm("snap_revert", f"node1:{b.path(vm)}", 0, vm.id,
                                                                   IMAGE_DS)),
        "tm monitor": (lambda: None, tm_monitor),
        "ds stat": (lambda: Image(-1, "", IMAGE_DS, path=str(raw)), lambda img: b.ds("stat", img)),
        "ds cp (64 MiB raw)": (lambda: Image(b.image_id(), "cp", IMAGE_DS, path=str(raw), size=64),
                               lambda img: b.ds("cp", img)),
        "ds mkfs": (datablock, lambda img: b.ds("mkfs", img)),
        "ds clone": (copy_of, lambda img: b.ds("clone", img)),
        "ds rm": (b.spawn_image, lambda img: b.ds("rm", img)),
        "ds monitor": (lambda: Image(-1, "", IMAGE_DS), lambda img: b.ds("monitor", img)),
        "ds export": (b.spawn_image, lambda img: b.ds("export", img)),
        "ds snap_revert": (lambda: b.spawn_image(snapshots=2), lambda img: b.ds("snap_revert", img)),
        "ds snap_flatten": (lambda: b.spawn_image(snapshots=2), lambda img: b.ds("snap_flatten", img)),
        "ds snap_delete": (lambda: b.spawn_image(snapshots=2), lambda img: b.ds("snap_delete", img)),
        "ln": (ln_vm, lambda vm: r.tm("ln", f"{FRONTEND}:/dev/drbd/by-res/one-image-2/0", f"node3:{b.path(vm)}",
                                      vm.id, IMAGE_DS)),
        "mvds": (linked_vm, lambda vm: r.tm("mvds", f"node3:{b.path(vm)}", "/dev/drbd/by-res/one-image-2/0", vm.id,
                                            IMAGE_DS)),
        "delete": (linked_vm, lambda vm: r.tm("delete", f"node3:{b.path(vm)}", vm.id, IMAGE_DS)),
        "resize": (clone_vm, lambda vm: r.tm("resize", f"node1:{b.path(vm)}", 128, vm.id, IMAGE_DS)),
        "snap_create": (clone_vm, lambda vm: r.tm("snap_create", f"node1:{b.path(vm)}", 0, vm.id, IMAGE_DS)),
        "snap_delete": (with_snapshot, lambda vm: r.tm("snap_delete", f"node1:{b.path(vm)}", 0, vm.id, IMAGE_DS)),
        "premigrate": (migrating, lambda c: r.migrate("premigrate", "node1", "node2", f"{SYS}/{c[0].id}", c[0].id,
                                                      SYSTEM_DS, c[1])),
        "postmigrate": (migrated, lambda c: r.migrate("postmigrate", "node1", "node2", f"{SYS}/{c[0].id}",
                                                      c[0].id, SYSTEM_DS, c[1])),
        "failmigrate": (migrated, lambda c: r.migrate("failmigrate", "node1", "node2", f"{SYS}/{c[0].id}",
                                                      c[0].id, SYSTEM_DS, c[1])),
        "clone (snapshot)": (snapshot_mode, lambda vm: r.tm("clone", f"{FRONTEND}:/dev/drbd/by-res/one-image-1/0",
                                                            f"node1:{b.path(vm)}", vm.id, IMAGE_DS)),
        "clone (copy)": (copy_mode, lambda vm: r.tm("clone", f"{FRONTEND}:/dev/drbd/by-res/one-image-1/0",
                                                    f"node1:{b.path(vm)}", vm.id, IMAGE_DS)),
        "mkimage": (b.new_vm_with_volatile, lambda vm: r.tm("mkimage", 64, "raw", f"node1:{SYS}/{vm.id}/disk.1", vm.id,
                                              SYSTEM_DS)),
    }


def run(runs: int) -> list[dict]:
    rows = []
    with Lab(LabConfig(hosts=3, validate_schema=False)) as lab:
        stats = Path(tempfile.mkstemp(prefix="linstor_un-stats-")[1])
        b = Bench(lab, stats)
        for name, (prepare, action) in scenarios(b).items():
            samples = []
            for _ in range(runs):
                ctx = prepare()
                b.start()
                samples.append(b.measure(action(ctx)))
            rows.append(summary(name, samples))
        stats.unlink()
    return rows


# the actions that touch hosts, measured per SSH mode (ssh_modes)
SSH_ACTIONS = ["ln", "mvds", "delete", "mkimage", "mkswap", "clone (snapshot)", "clone (copy)", "premigrate",
               "postmigrate", "failmigrate", "context"]
# the last commit whose driver reached hosts through paramiko (one connection per host per action)
PARAMIKO_BASELINE = "af6310e"


def baseline_tree(rev: str) -> Path:
    """The driver as it was at `rev` (git archive of lib, tm, datastore, vmm) in a temporary directory."""
    import subprocess
    tree = Path(tempfile.mkdtemp(prefix="linstor_un-baseline-"))
    done = subprocess.run(f"git -C {REPO} archive {rev} lib tm datastore vmm | tar -x -C {tree}", shell=True,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"cannot extract the baseline {rev}: {done.stderr.strip()}")
    return tree


def ssh_modes(runs: int, rev: str = PARAMIKO_BASELINE) -> list[dict]:
    """Each host-touching action three ways, interleaved round by round on one lab (a packaged
    front-end's ssh configuration, no jump host: every mode connects straight to the host):
    warm - OpenSSH, OpenNebula's master connection to the host already up (the usual case: any
           action or monitoring probe in the last 70 s made it);
    cold - OpenSSH, no master yet (the action makes it and leaves it to the next one);
    paramiko - the driver as it was at `rev`: its own connection per host per action."""
    import shutil
    old = baseline_tree(rev)
    rows = []
    try:
        with Lab(LabConfig(hosts=3, validate_schema=False, jump=False)) as lab:
            stats = Path(tempfile.mkstemp(prefix="linstor_un-stats-")[1])
            b = Bench(lab, stats)
            # paramiko reads no Include: the baseline gets the same host blocks in one file
            flat = lab.workdir / "home-flat"
            (flat / ".ssh").mkdir(parents=True)
            (flat / ".ssh" / "config").write_text((lab.home / ".ssh" / "config.d" / "hosts.conf").read_text())
            (flat / ".one").symlink_to(lab.home / ".one")
            envs = {"new": dict(b.r.env), "old": {**b.r.env, "HOME": str(flat), "PYTHONPATH": str(old / "lib")}}

            def use(which: str) -> None:
                lab.install_driver(REPO if which == "new" else old)
                b.r.env.clear()
                b.r.env.update(envs[which])

            specs = scenarios(b)
            for name in SSH_ACTIONS:
                prepare, action = specs[name]
                samples: dict[str, list] = {"warm": [], "cold": [], "paramiko": []}
                for _ in range(runs):
                    for mode in samples:
                        use("old" if mode == "paramiko" else "new")
                        ctx = prepare()
                        if mode == "cold":
                            lab.close_masters()
                        else:
                            lab.warm_masters()  # (paramiko: what it would find is the same)
                        b.start()
                        samples[mode].append(b.measure(action(ctx)))
                use("new")
                row = {"action": name, "runs": runs}
                for mode, got in samples.items():
                    row[f"{mode}_median_s"] = round(statistics.median(s["seconds"] for s in got), 3)
                row["remote_commands"] = max(s["remote_commands"] for s in samples["warm"])
                row["target_warm_s"] = 0.15
                rows.append(row)
            stats.unlink()
    finally:
        shutil.rmtree(old, ignore_errors=True)
    return rows


DOMAIN = """<domain type='qemu'><name>one-{vm}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>
<os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
<devices><disk type='block' device='disk'><driver name='qemu' type='raw' cache='none'/>
<source dev='{path}'/><target dev='vda' bus='virtio'/></disk></devices></domain>"""


def vmm_rows(runs: int) -> list[dict]:
    """save / restore (the VMM overrides) and snap_create_live, on a real QEMU (TCG) domain:
    each run saves the running domain into LINSTOR and restores it; a live snapshot between."""
    from lab.runner import vmm_action_data
    with Lab(LabConfig(hosts=2, libvirt=True, validate_schema=False)) as lab:
        stats = Path(tempfile.mkstemp(prefix="linstor_un-stats-")[1])
        b = Bench(lab, stats)
        vm = VM(500, lcm_state="RUNNING", history=[History("node1", SYSTEM_DS)],
                disks=[Disk(0, SYSTEM_DS, size=16)])
        lab.oned.add(vm)
        disk = f"{SYS}/500/disk.0"
        if not b.r.tm("mkimage", 16, "raw", f"node1:{disk}", 500, SYSTEM_DS).ok:
            raise RuntimeError("mkimage for the benchmark VM failed")
        h = lab.host("node1")
        (h.path("/var/lib/one/datastores") / "dom-500.xml").write_text(DOMAIN.format(vm=500, path=disk))
        h.run_inside("virsh -c qemu:///system create /var/lib/one/datastores/dom-500.xml")
        ckpt = f"{SYS}/500/checkpoint"
        data = vmm_action_data(to_xml(vm.element()), to_xml(lab.oned.datastores[SYSTEM_DS].element()), "node1",
                               "one-500", ckpt)
        samples: dict[str, list] = {"snap_create_live": [], "save (vmm)": [], "restore (vmm)": []}
        for i in range(runs):
            b.start()
            samples["snap_create_live"].append(b.measure(b.r.tm("snap_create_live", f"node1:{disk}", i, 500,
                                                                 SYSTEM_DS)))
            b.start()
            samples["save (vmm)"].append(b.measure(b.r.save("one-500", ckpt, "node1", 500, data)))
            b.start()
            samples["restore (vmm)"].append(b.measure(b.r.restore(ckpt, "node1", "one-500", 500, data)))
        stats.unlink()
        return [summary(name, s) for name, s in samples.items()]


def summary(name: str, samples: list[dict]) -> dict:
    secs = sorted(s["seconds"] for s in samples)
    p90 = secs[min(len(secs) - 1, int(round(0.9 * (len(secs) - 1))))]
    mins = MINIMUM[name]
    return {"action": name, "runs": len(samples), "median_s": round(statistics.median(secs), 3),
            "p90_s": round(p90, 3),
            "linstor_requests": max(s["linstor_requests"] for s in samples), "min_requests": mins[0],
            "http_requests": max(s["http_requests"] for s in samples),
            "ssh_connections": max(s["ssh_connections"] for s in samples),
            "remote_commands": max(s["remote_commands"] for s in samples),
            "min_commands": mins[1], "why_min": mins[2],
            "startup_s": round(statistics.median(s["startup_seconds"] for s in samples), 3)}


def scale(counts: list[int]) -> list[dict]:
    """TM monitor (system DS, VM disk sizes on) and DS monitor with many resource definitions."""
    from lab.runner import ds_action_data
    out = []
    for n in counts:
        with Lab(LabConfig(hosts=3, validate_schema=False)) as lab:
            lab.linstor.control("POST", "/__lab/bulk", {
                "prefix": "one-vm-bulk-", "count": n, "nodes": ["node1", "node2"], "pool": "data",
                "size_kib": 1024 * 1024, "snapshots": 2,
                "props": {"Aux/one/VM_ID": "{i}", "Aux/one/DS_ID": str(SYSTEM_DS), "Aux/one/DISK_ID": "0",
                          "Aux/one/SNAPSHOT_0/DISK_SIZE": "1024", "Aux/one/SNAPSHOT_1/DISK_SIZE": "2048"}})
            r = lab.runner()
            stats = Path(tempfile.mkstemp(prefix="linstor_un-stats-")[1])
            r.env["LINSTOR_UN_STATS"] = str(stats)
            wrapper = f"{sys.executable} {REPO / 'benchmarks' / 'maxrss.py'}"
            for kind, ds_id in (("tm/monitor", SYSTEM_DS), ("datastore/monitor", IMAGE_DS)):
                ds = lab.oned.datastores[ds_id]
                data = ds_action_data("", to_xml(ds.element()), "<MONITOR_VM_DISKS>1</MONITOR_VM_DISKS>")
                script = lab.one_location / "var" / "remotes" / kind.split("/")[0] / "linstor_un" / "monitor"
                mark = len(lab.linstor.requests())
                res = r._run(f"{wrapper} {script} {ds_id}", stdin=r.b64(data).encode())
                if not res.ok:
                    raise RuntimeError(str(res))
                rss = int(res.stderr.strip().splitlines()[-1].split("=")[1])
                reqs = len(lab.linstor.requests()) - mark
                sent = lab.monitor.messages[-1]["payload"].count("VM = [") if kind == "tm/monitor" else 0
                cpu = json.loads(stats.read_text().splitlines()[-1])["cpu_seconds"]
                out.append({"what": kind, "resources": n, "seconds": round(res.seconds, 2),
                            "driver_cpu_s": cpu, "waiting_s": round(res.seconds - cpu, 2),
                            "peak_mb": round(rss / 1024, 1), "linstor_requests": reqs, "vms_reported": sent})
            stats.unlink()
    return out


def throughput(size_mb: int, rounds: int = 3) -> list[dict]:
    """DS cp of a raw and a qcow2 image against `cat file | ssh host dd of=<device>` (OpenSSH)."""
    import re
    import subprocess
    from lab.oned import Image
    from lab.runner import ds_action_data
    out = []
    with Lab(LabConfig(hosts=3, validate_schema=False)) as lab:
        images = lab.workdir / "images"
        images.mkdir()
        raw = images / "big.raw"
        subprocess.run(["dd", "if=/dev/urandom", f"of={raw}", "bs=1M", f"count={size_mb}", "status=none"],
                       check=True)
        qcow = images / "big.qcow2"
        subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(qcow)], check=True)
        lab.oned.datastores[IMAGE_DS].template.update(SAFE_DIRS=str(images), BRIDGE_LIST="node1",
                                                      RESOURCE_GROUP="", NODE_LIST="node1", STORAGE_POOL="data")
        r = lab.runner()
        stats = Path(tempfile.mkstemp(prefix="linstor_un-stats-")[1])
        r.env["LINSTOR_UN_STATS"] = str(stats)
        # the baseline: the same bytes through OpenSSH into a device on the same host
        with lab.client() as c:
            c.resource_dfn_create("baseline")
            c.volume_dfn_create("baseline", size_mb * 1024)
            import linstor
            c.resource_create([linstor.ResourceData("node1", "baseline", storage_pool="data")])
        import time

        def baseline() -> float:
            start = time.monotonic()
            subprocess.run(f"cat {raw} | ssh -F {lab.home}/.ssh/config node1 "
                           f"dd of=/dev/drbd/by-res/baseline/0 bs=4M iflag=fullblock oflag=direct status=none",
                           shell=True, check=True)
            return time.monotonic() - start

        # interleaved rounds (baseline, raw, qcow2): page cache and CPU noise hit all three alike
        samples: dict[str, list] = {"openssh": [], "raw": [], "qcow2": []}
        steps_of: dict[str, list] = {"raw": [], "qcow2": []}
        image_id = 0
        for _ in range(rounds):
            samples["openssh"].append(baseline())
            for path in (raw, qcow):
                image_id += 1
                data = ds_action_data(to_xml(Image(image_id, "big", IMAGE_DS, path=str(path),
                                                   size=size_mb).element()),
                                      to_xml(lab.oned.datastores[IMAGE_DS].element()))
                res = r.ds("cp", data, image_id)
                if not res.ok:
                    raise RuntimeError(str(res))
                samples[path.suffix[1:]].append(res.seconds)
                steps_of[path.suffix[1:]].append(json.loads(stats.read_text().splitlines()[-1])["remote_steps"])
                stats.write_text("")
                with lab.client() as c:             # room for the next round
                    c.resource_dfn_delete(f"one-image-{image_id}")
        base = statistics.median(samples["openssh"])
        for kind in ("raw", "qcow2"):
            cp = statistics.median(samples[kind])
            last = steps_of[kind][-1]
            out.append({"image": kind, "mb": size_mb, "rounds": rounds, "cp_seconds": round(cp, 2),
                        "openssh_pipe_seconds": round(base, 2), "ratio": round(base / cp, 2),
                        # where the time went on the bridge (last round): the stream (dd, or staging), qemu-img
                        "steps": {" ".join(re.sub(r"\S*/\S*", "", step).split()): secs for _, step, secs in last
                                  if secs >= 0.05}})
    return out


def _native_or_host(template: dict, mode: str) -> None:
    """A datastore placement LINSTOR's clone of a one_rg volume gives ("linstor": the group), or
    one it would not ("host": one replica)."""
    if mode == "linstor":
        template.update(RESOURCE_GROUP="one_rg")
        template.pop("REPLICA_COUNT", None)
    else:
        template.update(RESOURCE_GROUP="", REPLICA_COUNT="1", STORAGE_POOL="data")


def _interleaved(rounds: int, template: dict, one_run) -> tuple[float, float]:
    """Median seconds of `one_run(mode, i)` (a Result) for LINSTOR's copy and the host's, interleaved."""
    samples: dict[str, list] = {"linstor": [], "host": []}
    for i in range(rounds):
        for mode in samples:
            _native_or_host(template, mode)
            res = one_run(mode, i)
            expect = "copied by LINSTOR" if mode == "linstor" else "copied through"
            if not res.ok or expect not in res.stderr:
                raise RuntimeError(f"{mode}: {res}")
            samples[mode].append(res.seconds)
    _native_or_host(template, "linstor")
    return statistics.median(samples["linstor"]), statistics.median(samples["host"])


def clone_copy(size_mb: int, rounds: int = 3) -> dict:
    """TM clone in CLONE_MODE=copy of one image of `size_mb` (written whole), interleaved: LINSTOR's
    resource-definition clone (the system datastore places as the image is placed) against the
    byte copy through the VM's host (a placement the clone would not give: one replica). Then TM
    cpds (save-as of the stopped VM's disk, after DS mkfs) the same two ways (the image
    datastore's placement decides)."""
    from lab.oned import Image
    from lab.runner import ds_action_data
    image = "/dev/drbd/by-res/one-image-7/0"
    with Lab(LabConfig(hosts=3, validate_schema=False)) as lab:
        system = lab.oned.datastores[SYSTEM_DS].template
        system["CLONE_MODE"] = "copy"
        with lab.client() as c:
            c.resource_group_spawn("one_rg", "one-image-7", [size_mb * 1024])
        lab.oned.add(Image(7, "big", IMAGE_DS, source=image, size=size_mb))
        with lab.client() as c:
            node = next(r.node_name for r in c.resource_list_raise(filter_by_resources=["one-image-7"]).resources
                        if "DISKLESS" not in r.flags)
        lab.host(node).run_inside(f"dd if=/dev/urandom of={image} bs=1M count={size_mb} "
                                  "oflag=direct status=none", timeout=600)
        r = lab.runner()

        def vm_with_image(vm_id: int, **state) -> None:
            lab.oned.add(VM(vm_id, history=[History("node1", SYSTEM_DS)], **state,
                            disks=[Disk(0, IMAGE_DS, image_id=7, source=image, size=size_mb)]))

        def clone(mode: str, i: int):
            vm_id = 701 + i * 2 + (mode == "host")
            vm_with_image(vm_id, lcm_state="PROLOG")
            res = r.tm("clone", f"{FRONTEND}:{image}", f"node1:{SYS}/{vm_id}/disk.0", vm_id, IMAGE_DS)
            r.tm("delete", f"node1:{SYS}/{vm_id}/disk.0", vm_id, IMAGE_DS)
            return res
        native, host = _interleaved(rounds, system, clone)

        # cpds of a stopped VM's disk (a LINSTOR clone of the image: on its nodes and pools)
        vm_with_image(799, state="POWEROFF", lcm_state="LCM_INIT")
        made = r.tm("clone", f"{FRONTEND}:{image}", f"node1:{SYS}/799/disk.0", 799, IMAGE_DS)
        if not made.ok:
            raise RuntimeError(str(made))

        def cpds(mode: str, i: int):
            image_id = 801 + i * 2 + (mode == "host")
            img = Image(image_id, f"saveas{image_id}", IMAGE_DS, format="raw", size=size_mb, state=4)
            lab.oned.add(img)
            mkfs = r.ds("mkfs", ds_action_data(to_xml(img.element()), to_xml(lab.oned.datastores[IMAGE_DS].element())),
                        image_id)
            if not mkfs.ok:
                raise RuntimeError(str(mkfs))
            return r.tm("cpds", f"node1:{SYS}/799/disk.0", mkfs.stdout.split()[0], -1, 799, IMAGE_DS)
        cpds_native, cpds_host = _interleaved(rounds, lab.oned.datastores[IMAGE_DS].template, cpds)
        return {"mb": size_mb, "rounds": rounds, "linstor_clone_s": round(native, 2), "host_copy_s": round(host, 2),
                "ratio": round(host / native, 2), "cpds_linstor_s": round(cpds_native, 2),
                "cpds_host_s": round(cpds_host, 2), "cpds_ratio": round(cpds_host / cpds_native, 2)}


def concurrency(clones: int) -> dict:
    """`clones` clones of one image onto three hosts at once, as oned's -t 15 would run them."""
    import concurrent.futures
    import re
    import time
    with Lab(LabConfig(hosts=3, validate_schema=False)) as lab:
        for ds in (IMAGE_DS, SYSTEM_DS):
            lab.oned.datastores[ds].template.update(RESOURCE_GROUP="", REPLICA_COUNT="1", STORAGE_POOL="data")
        with lab.client() as c:
            c.resource_group_spawn("one_rg", "one-image-1", [64 * 1024])
        r = lab.runner()
        hosts = lab.node_names
        jobs = []
        for i in range(clones):
            vm = VM(2000 + i, history=[History(hosts[i % 3], SYSTEM_DS)],
                    disks=[Disk(0, IMAGE_DS, image_id=1, source="/dev/drbd/by-res/one-image-1/0", size=64)])
            lab.oned.add(vm)
            jobs.append((vm.id, hosts[i % 3]))
        mark = len(lab.linstor.requests())
        start = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(clones) as pool:
            results = list(pool.map(lambda j: r.tm("clone", f"{FRONTEND}:/dev/drbd/by-res/one-image-1/0",
                                                   f"{j[1]}:{SYS}/{j[0]}/disk.0", j[0], IMAGE_DS), jobs))
        wall = time.monotonic() - start
        attaches = [q["path"] for q in lab.linstor.requests()[mark:]
                    if q["method"] == "POST" and re.search(r"one-image-1/resources/[^/]+/make-available$", q["path"])]
        per_host = {h: sum(1 for p in attaches if f"/resources/{h}/" in p) for h in hosts}
        with lab.client() as c:
            image_on = sorted(r.node_name + (" (tie-breaker)" if "TIE_BREAKER" in r.flags else "")
                              + (" (TEMPORARY left!)" if "Aux/one/TEMPORARY" in r.properties else "")
                              for r in c.resource_list(filter_by_resources=["one-image-1"])[0].resources)
        return {"clones": clones, "wall_seconds": round(wall, 2), "succeeded": sum(x.ok for x in results),
                "image_attaches_per_host": per_host, "image_replicas_after": image_on}


def table(rows: list[dict], head: list = None) -> str:
    head = head or ["action", "runs", "median_s", "p90_s", "linstor_requests", "min_requests", "http_requests",
                    "ssh_connections",
                    "remote_commands", "min_commands", "startup_s"]
    widths = [max(len(h), *(len(str(r[h])) for r in rows)) for h in head]
    out = ["  ".join(h.ljust(w) for h, w in zip(head, widths))]
    out += ["  ".join(str(r[h]).ljust(w) for h, w in zip(head, widths)) for r in rows]
    return "\n".join(out)


# where an action's wall time goes, from a cProfile of one run: cumulative time of these
# functions (the remote commands' share has the ssh configuration look-up taken out)
PROFILE_FUNCS = {
    "connect": ("linstor_un/remote.py", "argv"),        # `ssh -G <host>`: once per host
    "run": ("linstor_un/remote.py", "run"),
    "stream": ("linstor_un/remote.py", "stream"),
    "linstor": ("linstor_un/linstor_api.py", "_call"),
    "linstor_connect": ("linstor_un/linstor_api.py", "_connect"),
    "oned": ("linstor_un/one_api.py", "_call"),
    "main": ("linstor_un/action.py", "run"),
}


def profile(names: list[str]) -> list[dict]:
    """cProfile of one run of each action: the wall time split into PROFILE_PARTS (overlapping:
    remote commands include the connect; imports happen inside the others too)."""
    import pstats
    out = []
    with Lab(LabConfig(hosts=3, validate_schema=False)) as lab:
        stats = Path(tempfile.mkstemp(prefix="linstor_un-stats-")[1])
        b = Bench(lab, stats)
        chosen = {n: sc for n, sc in scenarios(b).items() if n in names}
        for name, (prepare, action) in chosen.items():
            ctx = prepare()
            lab.warm_masters()              # OpenNebula's master connections up, as usual
            prof = Path(tempfile.mkstemp(prefix="linstor_un-prof-")[1])
            plain = b.r._run
            b.r._run = lambda cmd, stdin=b"", extra_env=None, kill_when=None: plain(
                f"{sys.executable} -m cProfile -o {prof} {cmd}", stdin, extra_env)
            try:
                result = action(ctx)
            finally:
                b.r._run = plain
            if not result.ok:
                raise RuntimeError(str(result))
            st = pstats.Stats(str(prof))
            ct = {k: 0.0 for k in PROFILE_FUNCS}
            module = 0.0
            for (f, _, fn), (_, _, _, cum, _) in st.stats.items():
                for key, (file, func) in PROFILE_FUNCS.items():
                    if f.endswith(file) and fn == func:
                        ct[key] += cum
                if fn == "<module>" and f.endswith(name.split()[0]):
                    module = max(module, cum)
            total = max(c for (_, _, _, c, _) in st.stats.values())
            row = {"action": name, "wall_s": round(result.seconds, 3), "profiled_s": round(total, 3),
                   "imports_before_main_s": round(module - ct["main"], 3),
                   "ssh_config_s": round(ct["connect"], 3),
                   # commands and host-to-host streams (ssh clients, the master's round trips)
                   "remote_commands_s": round(ct["run"] + ct["stream"] - ct["connect"], 3),
                   "linstor_s": round(ct["linstor"] + ct["linstor_connect"], 3),
                   "oned_s": round(ct["oned"], 3)}
            out.append(row)
            prof.unlink()
        stats.unlink()
    return out


def backups(size_mb: int, rounds: int = 3) -> dict:
    """Backups of a disk of `size_mb`, half written: the full backup (TM prebackup, increment 0)
    against `dd` of the same device to a file on the same host (whole device, and its written
    half), then an increment with 1 % of the 64 KiB blocks rewritten at scattered places: bytes
    written and wall time. Interleaved rounds; medians."""
    import random
    import subprocess
    import time
    from lab.backup_ds import BackupDatastore
    block = 64 << 10
    with Lab(LabConfig(hosts=2, validate_schema=False)) as lab:
        r = lab.runner()
        bds = BackupDatastore(lab)
        vm = VM(700, lcm_state="RUNNING", disks=[Disk(0, SYSTEM_DS, size=size_mb)], history=[History("node1", SYSTEM_DS)])
        lab.oned.add(vm)
        disk = f"{SYS}/700/disk.0"
        if not r.tm("mkimage", size_mb, "raw", f"node1:{disk}", 700, SYSTEM_DS).ok:
            raise RuntimeError("mkimage failed")
        host = lab.host("node1")
        host.run_inside(f"dd if=/dev/urandom of={disk} bs=1M count={size_mb // 2} oflag=direct status=none",
                        timeout=600)
        ssh = f"ssh -F {lab.home}/.ssh/config node1"
        rnd = random.Random(1)
        stats = Path(tempfile.mkstemp(prefix="linstor_un-stats-")[1])
        r.env["LINSTOR_UN_STATS"] = str(stats)
        samples: dict[str, list] = {"dd_whole": [], "dd_half": [], "dd_direct": [], "full": [], "full_read": [],
                                    "increment": [], "inc_read": [], "inc_bytes": [], "changed": [],
                                    "inc_device_read": [], "digest_inc": [], "digest_device_read": [],
                                    "full_ctl": [], "inc_ctl": [], "digest_ctl": []}

        def backup_timed(kind: str):
            """A backup, and the seconds the emulated controller spent in it (copying bytes for
            snapshots and restores, which LVM thin does in O(1))."""
            since = time.time()
            run = bds.backup(r, vm, [0], live=False)
            samples[kind].append(lab.linstor.controller_seconds(since))
            return run

        def device_read(run) -> int:
            found = re.findall(r"(\d+) bytes read", run.pre.stderr)
            return int(found[-1]) if found else -1

        def rewrite_one_percent() -> int:
            blocks = size_mb * 1024 * 1024 // block
            picked = rnd.sample(range(blocks), max(1, blocks // 100))
            script = "; ".join(f"dd if=/dev/urandom of={disk} bs=64k seek={b} count=1 conv=notrunc status=none"
                               for b in picked)
            host.run_inside(script + "; sync", timeout=600)
            return len(picked) * block

        def read_step() -> float:
            """The host's read of the snapshot (the rest is LINSTOR: snapshot, restore, attach, delete)."""
            steps = json.loads(stats.read_text().splitlines()[0])["remote_steps"]
            stats.write_text("")
            return sum(secs for _, step, secs in steps if step.startswith("back up disk"))

        def timed(cmd: str) -> float:
            start = time.monotonic()
            subprocess.run(cmd, shell=True, check=True)
            return time.monotonic() - start

        for _ in range(rounds):
            out = f"{SYS}/700/dd.out"
            samples["dd_whole"].append(timed(f"{ssh} dd if={disk} of={out} bs=4M status=none"))
            samples["dd_half"].append(timed(f"{ssh} dd if={disk} of={out} bs=4M count={size_mb // 8} "
                                            f"status=none"))
            samples["dd_direct"].append(timed(f"{ssh} dd if={disk} of={out} bs=4M iflag=direct status=none"))
            host.run_inside(f"rm -f {out}")
            vm.backup_config = {"MODE": "INCREMENT", "LAST_INCREMENT_ID": -1}
            stats.write_text("")
            full = backup_timed("full_ctl")
            if not full.ok:
                raise RuntimeError(str(full.pre))
            samples["full"].append(full.pre.seconds)
            samples["full_read"].append(read_step())
            changed = rewrite_one_percent()
            stats.write_text("")
            inc = backup_timed("inc_ctl")                      # the changed-block path (LVM_THIN: thin_delta)
            if not inc.ok:
                raise RuntimeError(str(inc.pre))
            samples["increment"].append(inc.pre.seconds)
            samples["inc_read"].append(read_step())
            samples["changed"].append(changed)
            samples["inc_bytes"].append((bds.root / "700" / inc.source / "disk.0.1").stat().st_size)
            samples["inc_device_read"].append(device_read(inc))
            rewrite_one_percent()                              # beside it: the digest path (no thin_delta)
            for node in lab.node_names:
                lab.fail_command(node, "thin_delta")
            try:
                stats.write_text("")
                dig = backup_timed("digest_ctl")
            finally:
                lab.clear_command_faults()
            if not dig.ok or "changed blocks:" not in dig.pre.stderr:
                raise RuntimeError(str(dig.pre))
            read_step()
            samples["digest_inc"].append(dig.pre.seconds)
            samples["digest_device_read"].append(device_read(dig))
        med = {k: statistics.median(v) for k, v in samples.items()}
        half_mb = size_mb / 2
        return {"disk_mb": size_mb, "written_mb": half_mb, "rounds": rounds,
                "dd_whole_s": round(med["dd_whole"], 2), "dd_written_half_s": round(med["dd_half"], 2),
                "dd_whole_direct_s": round(med["dd_direct"], 2),
                "full_backup_s": round(med["full"], 2), "full_read_s": round(med["full_read"], 2),
                "full_vs_dd_half": round(med["dd_half"] / med["full"], 2),
                "full_read_vs_dd_half": round(med["dd_half"] / med["full_read"], 2),
                "increment_s": round(med["increment"], 2), "increment_read_s": round(med["inc_read"], 2),
                "increment_vs_full": round(med["increment"] / med["full"], 2),
                "changed_mib": round(med["changed"] / 2**20, 2), "increment_file_mib": round(med["inc_bytes"] / 2**20, 2),
                "increment_bytes_limit_mib": round((1.1 * med["changed"] + 2**20) / 2**20, 2),
                "increment_device_read_mib": round(med["inc_device_read"] / 2**20, 2),
                "increment_read_limit_mib": round((2 * med["changed"] + 2**20) / 2**20, 2),
                "full_without_controller_s": round(med["full"] - med["full_ctl"], 2),
                "increment_without_controller_s": round(med["increment"] - med["inc_ctl"], 2),
                "increment_vs_full_without_controller": round((med["increment"] - med["inc_ctl"])
                                                              / (med["full"] - med["full_ctl"]), 2),
                "digest_increment_s": round(med["digest_inc"], 2),
                "digest_increment_without_controller_s": round(med["digest_inc"] - med["digest_ctl"], 2),
                "digest_increment_vs_full": round(med["digest_inc"] / med["full"], 2),
                "digest_device_read_mib": round(med["digest_device_read"] / 2**20, 2)}


def freeze_times(disks: int = 4, rounds: int = 5) -> dict:
    """How long a live backup keeps the guest frozen, on a real QEMU domain with `disks` disks:
    from the domfsfreeze to the domfsthaw as virsh on the host sees them (a guest agent stand-in
    answers both, as tests/vmm/test_backup_live.py does)."""
    from lab.backup_ds import BackupDatastore
    from tests.vmm.test_backup_live import AGENT_VIRSH
    from tests.vmm.test_save_restore import boot
    with Lab(LabConfig(hosts=2, libvirt=True, validate_schema=False)) as lab:
        r = lab.runner()
        bds = BackupDatastore(lab)
        vm = VM(710, lcm_state="RUNNING", disks=[Disk(d, SYSTEM_DS, size=16) for d in range(disks)],
                history=[History("node1", SYSTEM_DS)])
        lab.oned.add(vm)
        for d in range(disks):
            if not r.tm("mkimage", 16, "raw", f"node1:{SYS}/710/disk.{d}", 710, SYSTEM_DS).ok:
                raise RuntimeError("mkimage failed")

        class _Env:
            pass
        env = _Env()
        env.lab = lab
        boot(env, 710, "node1", f"{SYS}/710/disk.0")
        shim = lab.host("node1").path("/usr/local/bin") / "virsh"
        shim.write_text(AGENT_VIRSH)
        shim.chmod(0o755)
        log = lab.host("node1").path("/var/lib/one/datastores") / "virsh.log"
        frozen, walls = [], []
        for _ in range(rounds):
            log.unlink(missing_ok=True)
            vm.backup_config = {"MODE": "FULL"}
            run_ = bds.backup(r, vm, list(range(disks)), live=True)
            if not run_.ok:
                raise RuntimeError(str(run_.pre))
            stamps = [float(line.split()[0]) for line in log.read_text().splitlines()]
            frozen.append(stamps[1] - stamps[0])
            walls.append(run_.pre.seconds)
        return {"disks": disks, "rounds": rounds, "frozen_median_s": round(statistics.median(frozen), 3),
                "frozen_max_s": round(max(frozen), 3), "prebackup_live_median_s": round(statistics.median(walls), 2)}


VM_SNAPSHOT_DOMAIN = """<domain type='qemu'><name>one-{vm}</name><memory unit='MiB'>{mib}</memory><vcpu>1</vcpu>
<memoryBacking><source type='memfd'/><access mode='shared'/></memoryBacking>
<os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os><devices>{disks}</devices></domain>"""


def vm_snapshot_pause(disks: int = 2, memory_mib: int = 256, rounds: int = 5) -> dict:
    """How long snapshot_create_linstor_un keeps a guest paused (the action's own measure, from
    the pause to the resume) with `disks` disks and `memory_mib` of memory, the guest's memory
    filled first with random bytes (so the image is as large as the memory); baseline in the same
    run: the stop a `virsh save` + `virsh restore` of the same domain to the same kind of volume
    costs (the other way libvirt offers to keep a running guest's memory)."""
    from lab.runner import vmm_action_data
    from tests.vmm.test_vm_snapshots import BOOT, DISK, started
    with Lab(LabConfig(hosts=2, libvirt=True, validate_schema=False)) as lab:
        r = lab.runner()
        vm_id = 720
        vm = VM(vm_id, lcm_state="RUNNING", disks=[Disk(d, SYSTEM_DS, size=16) for d in range(disks)],
                history=[History("node1", SYSTEM_DS)], template={"MEMORY": str(memory_mib)})
        lab.oned.add(vm)
        for d in range(disks):
            if not r.tm("mkimage", 16, "raw", f"node1:{SYS}/{vm_id}/disk.{d}", vm_id, SYSTEM_DS).ok:
                raise RuntimeError("mkimage failed")
        lab.write_device("node1", f"{SYS}/{vm_id}/disk.0", BOOT)
        h = lab.host("node1")
        xml = VM_SNAPSHOT_DOMAIN.format(vm=vm_id, mib=memory_mib, disks="".join(
            DISK.format(path=f"{SYS}/{vm_id}/disk.{d}", letter="abcd"[d]) for d in range(disks)))
        (h.path("/var/lib/one/datastores") / f"dom-{vm_id}.xml").write_text(xml)
        h.run_inside(f"virsh -c qemu:///system create /var/lib/one/datastores/dom-{vm_id}.xml")

        env = SimpleNamespace(lab=lab)
        while not started(env, "node1", vm_id):
            time.sleep(0.5)
        # the guest's memory above 1 MiB filled with random bytes, through QEMU's own memory file
        pid = h.run_inside(f"cat /run/libvirt/qemu/one-{vm_id}.pid").stdout.decode().strip()
        fill = (f"for m in $(ls /proc/{pid}/fd); do t=$(readlink /proc/{pid}/fd/$m); case $t in *memfd:*memory-backend*) "
                f"dd if=/dev/urandom of=/proc/{pid}/fd/$m bs=1M seek=1 count={memory_mib - 1} conv=notrunc "
                f"status=none; echo filled;; esac; done")
        filled = h.run_inside(fill).stdout.decode()
        pauses, creates, reverts, baseline = [], [], [], []

        def data() -> str:          # what oned sends with the VM as it is now (its SNAPSHOTs)
            return vmm_action_data(to_xml(vm.element()), to_xml(lab.oned.datastores[SYSTEM_DS].element()), "node1",
                                   f"one-{vm_id}", "")
        for i in range(rounds):
            vm.snapshots.clear()
            snap = vm.new_snapshot()
            made = r.vm_snapshot("create", f"one-{vm_id}", "0", vm_id, "node1", data())
            if not made.ok:
                raise RuntimeError(str(made))
            m = re.search(r"paused ([0-9.]+) s", made.stderr)
            pauses.append(float(m.group(1)))
            creates.append(made.seconds)
            snap["HYPERVISOR_ID"] = made.stdout.split()[0]
            vm.activate_snapshot(0, "REVERT")
            back = r.vm_snapshot("revert", f"one-{vm_id}", snap["HYPERVISOR_ID"], vm_id, "node1", data())
            if not back.ok:
                raise RuntimeError(str(back))
            reverts.append(back.seconds)
            vm.activate_snapshot(0, "DELETE")
            if not r.vm_snapshot("delete", f"one-{vm_id}", snap["HYPERVISOR_ID"], vm_id, "node1", data()).ok:
                raise RuntimeError("delete failed")
            # the baseline: the guest stopped from `virsh save` to the end of `virsh restore`
            with lab.client() as c:
                name = f"bench-ram-{i}"
                c.resource_group_spawn("one_rg", name, [memory_mib * 1024 + 256 * 1024])
                c.resource_make_available("node1", name)
            dev = f"/dev/drbd/by-res/{name}/0"
            t0 = time.monotonic()
            h.run_inside(f"virsh -c qemu:///system save one-{vm_id} {dev} && "
                         f"virsh -c qemu:///system restore {dev}")
            baseline.append(time.monotonic() - t0)
            with lab.client() as c:
                c.resource_dfn_delete(name)
        pause = statistics.median(pauses)
        return {"disks": disks, "memory_mib": memory_mib, "rounds": rounds, "memory_filled": "filled" in filled,
                "pause_median_s": round(pause, 3), "pause_max_s": round(max(pauses), 3),
                "create_median_s": round(statistics.median(creates), 2),
                "revert_median_s": round(statistics.median(reverts), 2),
                "save_restore_stop_median_s": round(statistics.median(baseline), 3),
                "pause_vs_save_restore": round(pause / statistics.median(baseline), 2)}


def markdown(results: dict) -> str:
    """The tables of docs/benchmarks.md, from results.json (so every figure there comes from a run)."""
    out = ["| action | median s | p90 s | LINSTOR requests (min) | HTTP requests | SSH conn. | remote cmds (min) "
           "| start-up s |", "|---|---|---|---|---|---|---|---|"]
    for r in results["actions"]:
        note = " ¹" if r["action"] in ABOVE_MINIMUM else ""
        out.append(f"| {r['action']} | {r['median_s']:.2f} | {r['p90_s']:.2f} | {r['linstor_requests']} "
                   f"({r['min_requests']}){note} | {r['http_requests']} | {r['ssh_connections']} | "
                   f"{r['remote_commands']} ({r['min_commands']}) | {r['startup_s']:.2f} |")
    out += ["", "Why the minimum (fewest requests / commands the action could need in the measured case):", ""]
    out += [f"- {r['action']}: {MINIMUM[r['action']][2]}" for r in results["actions"]]
    out += ["", "¹ above minimum + 1: " + "; ".join(f"{k}: {v}" for k, v in ABOVE_MINIMUM.items())]
    if "profiles" in results:
        keys = [k for k in results["profiles"][0] if k != "action"]
        out += ["", "| profile of one run (cProfile) | " + " | ".join(k.replace("_", " ") for k in keys) + " |",
                "|---|" + "---|" * len(keys)]
        out += [f"| {p['action']} | " + " | ".join(str(p[k]) for k in keys) + " |" for p in results["profiles"]]
    if "ssh_modes" in results:
        out += ["", "| host-touching action | remote cmds | warm master s | cold s | paramiko (before) s | "
                "target warm s |", "|---|---|---|---|---|---|"]
        out += [f"| {r['action']} | {r['remote_commands']} | {r['warm_median_s']:.3f} | {r['cold_median_s']:.3f} | "
                f"{r['paramiko_median_s']:.3f} | < {r['target_warm_s']} |" for r in results["ssh_modes"]]
    if "throughput" in results:
        out += ["", "| import of | MiB | DS cp s | `cat \\| ssh dd` s | ratio | bridge steps s |",
                "|---|---|---|---|---|---|"]
        out += [f"| {t['image']} | {t['mb']} | {t['cp_seconds']} | {t['openssh_pipe_seconds']} | {t['ratio']} | "
                + ", ".join(f"{k}: {v}" for k, v in t.get("steps", {}).items()) + " |" for t in results["throughput"]]
    if "backups" in results:
        b = results["backups"]
        out += ["", "| backup of a disk half written | MiB | wall s | against | ratio | file MiB |",
                "|---|---|---|---|---|---|",
                f"| `dd` of the whole device to a file (same host) | {b['disk_mb']} | {b['dd_whole_s']} | | | |",
                f"| `dd` of the written half | {b['written_mb']:.0f} | {b['dd_written_half_s']} | | | |",
                f"| `dd iflag=direct` of the whole device | {b['disk_mb']} | {b.get('dd_whole_direct_s', '')} | | | |",
                f"| full backup (prebackup, increment 0) | {b['disk_mb']} | {b['full_backup_s']} | dd of the written "
                f"half | {b['full_vs_dd_half']} | |",
                f"| — of which the host's read of the snapshot | {b['disk_mb']} | {b.get('full_read_s', '')} | dd of "
                f"the written half | {b.get('full_read_vs_dd_half', '')} | |",
                f"| increment, 1 % of the blocks rewritten ({b['changed_mib']} MiB): changed blocks (thin_delta) "
                f"| {b['disk_mb']} | {b['increment_s']} | the full backup | {b['increment_vs_full']} | "
                f"{b['increment_file_mib']} (limit {b['increment_bytes_limit_mib']}) |",
                f"| — of which the host's read of the snapshot | {b['disk_mb']} | {b.get('increment_read_s', '')} | | | |",
                f"| — bytes read from the device, MiB | {b['disk_mb']} | {b.get('increment_device_read_mib', '')} "
                f"(limit {b.get('increment_read_limit_mib', '')}) | | | |",
                f"| — without the emulated controller's time (it copies bytes for snapshots and restores) | "
                f"{b['disk_mb']} | {b.get('increment_without_controller_s', '')} | the full backup, likewise "
                f"({b.get('full_without_controller_s', '')} s) | {b.get('increment_vs_full_without_controller', '')} | |",
                f"| the same increment by block digests (no thin_delta) | {b['disk_mb']} | "
                f"{b.get('digest_increment_s', '')} | the full backup | {b.get('digest_increment_vs_full', '')} | |",
                f"| — bytes read from the device, MiB | {b['disk_mb']} | {b.get('digest_device_read_mib', '')} | | | |",
                f"| — without the emulated controller's time | {b['disk_mb']} | "
                f"{b.get('digest_increment_without_controller_s', '')} | | | |"]
        if "increment_vs_full_without_controller" in b:
            out += ["", "The lab's emulated controller copies the bytes of a disk when it takes a snapshot and when "
                    "it restores one (LVM thin does both in O(1)), and the full backup and both increments pay "
                    "that alike; without it an increment through `thin_delta` takes "
                    f"{b['increment_vs_full_without_controller']} of the full backup and reads "
                    f"{b.get('increment_device_read_mib', '?')} MiB of the {b['disk_mb']} MiB device (the digest "
                    "path: all of it)."]
    if "freeze" in results:
        f = results["freeze"]
        out += ["", f"Guest frozen during a live backup of {f['disks']} disks ({f['rounds']} runs): median "
                f"{f['frozen_median_s']} s, longest {f['frozen_max_s']} s (prebackup_live median "
                f"{f['prebackup_live_median_s']} s)."]
    if "vm_snapshot" in results:
        v = results["vm_snapshot"]
        out += ["", f"VM snapshot of a guest with {v['disks']} disks and {v['memory_mib']} MiB of memory "
                f"({'filled with random bytes' if v['memory_filled'] else 'mostly untouched'}; {v['rounds']} runs): "
                f"paused median {v['pause_median_s']} s, longest {v['pause_max_s']} s — "
                f"{v['pause_vs_save_restore']}x the stop of a `virsh save` + `virsh restore` of the same domain "
                f"({v['save_restore_stop_median_s']} s); snapshot_create median {v['create_median_s']} s, "
                f"snapshot_revert median {v['revert_median_s']} s."]
    if "monitor_scale" in results:
        out += ["", "| monitor | resources | wall s | driver CPU s | waiting s | peak MB | LINSTOR requests |",
                "|---|---|---|---|---|---|---|"]
        out += [f"| {m['what']} | {m['resources']} | {m['seconds']} | {m.get('driver_cpu_s', '')} | "
                f"{m.get('waiting_s', '')} | {m['peak_mb']} | {m['linstor_requests']} |" for m in results["monitor_scale"]]
    if "clone_copy" in results:
        k = results["clone_copy"]
        out += ["", f"TM clone in copy mode of a {k['mb']} MiB image ({k['rounds']} interleaved rounds): LINSTOR's "
                f"resource-definition clone {k['linstor_clone_s']} s, the byte copy through the VM's host "
                f"{k['host_copy_s']} s ({k['ratio']}x). TM cpds (save-as of the stopped VM's disk, after DS "
                f"mkfs): LINSTOR's clone {k.get('cpds_linstor_s', '?')} s, through a host {k.get('cpds_host_s', '?')} s "
                f"({k.get('cpds_ratio', '?')}x). In the lab LINSTOR's clone is the emulator copying the volume file "
                f"itself, so these rows compare the driver's two paths, not a real controller's clone speed; runs "
                f"vary by about ±30 % on the lab machine."]
    if "concurrency" in results:
        c = results["concurrency"]
        out += ["", f"Concurrency: {c['clones']} clones of one image to three hosts at once: {c['succeeded']} "
                f"succeeded in {c['wall_seconds']} s; image attaches per host {c['image_attaches_per_host']}; "
                f"the image's replicas afterwards: {', '.join(c['image_replicas_after'])}."]
    return "\n".join(out)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=20, help="0: skip the per-action table")
    p.add_argument("--scale", default="1000,10000", help="resource counts for the monitor test ('' to skip)")
    p.add_argument("--throughput-mb", type=int, default=1024)
    p.add_argument("--ssh-runs", type=int, default=10, help="rounds of the warm/cold/paramiko table (0: skip)")
    p.add_argument("--clones", type=int, default=15)
    p.add_argument("--clone-mb", type=int, default=1024, help="image size for clone: LINSTOR vs host copy (0: skip)")
    p.add_argument("--backup-mb", type=int, default=1024, help="disk size for the backup rows (0: skip)")
    p.add_argument("--vmm", type=int, default=1, help="0: skip save/restore/snap_create_live (needs libvirt)")
    p.add_argument("--json", default=str(REPO / "benchmarks" / "results.json"))
    p.add_argument("--markdown", action="store_true",
                   help="only render the tables from --json (into docs/benchmarks.md between its figure markers)")
    p.add_argument("--profile", default="", help="comma-separated actions: print where their time goes, and exit")
    args = p.parse_args()
    if args.markdown:
        text = markdown(json.loads(Path(args.json).read_text()))
        readme = REPO / "docs" / "benchmarks.md"
        begin, end = "<!-- benchmark figures: begin -->", "<!-- benchmark figures: end -->"
        old = readme.read_text()
        if begin in old and end in old:
            head, rest = old.split(begin, 1)
            readme.write_text(f"{head}{begin}\n{text}\n{end}{rest.split(end, 1)[1]}")
        print(text)
        return 0
    if args.profile:
        rows = profile(args.profile.split(","))
        print(table(rows, list(rows[0])))
        out = Path(args.json)
        results = json.loads(out.read_text()) if out.exists() else {}
        results["profiles"] = rows
        out.write_text(json.dumps(results, indent=1) + "\n")
        return 0
    out = Path(args.json)
    results = json.loads(out.read_text()) if out.exists() else {}     # parts not run this time stay
    if args.runs:
        results["actions"] = rows = run(args.runs)
        if args.vmm:
            rows += vmm_rows(args.runs)
        print(table(rows))
    if args.ssh_runs:
        results["ssh_modes"] = sm = ssh_modes(args.ssh_runs)
        print("\n" + table(sm, list(sm[0])))
    if args.throughput_mb:
        results["throughput"] = t = throughput(args.throughput_mb, rounds=3 if args.throughput_mb >= 256 else 1)
        print("\n" + table(t, list(t[0])))
    if args.backup_mb:
        results["backups"] = bk = backups(args.backup_mb)
        print("\n" + json.dumps(bk))
        if args.vmm:
            results["freeze"] = fz = freeze_times()
            print(json.dumps(fz))
            results["vm_snapshot"] = vs = vm_snapshot_pause()
            print(json.dumps(vs))
    if args.scale:
        results["monitor_scale"] = m = scale([int(x) for x in args.scale.split(",")])
        print("\n" + table(m, list(m[0])))
    if args.clone_mb:
        results["clone_copy"] = cc = clone_copy(args.clone_mb)
        print("\n" + json.dumps(cc))
    if args.clones:
        results["concurrency"] = cc = concurrency(args.clones)
        print("\n" + json.dumps(cc))
    Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
