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
import os
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lab.lab import FRONTEND, IMAGE_DS, SYSTEM_DS, Lab, LabConfig  # noqa: E402
from lab.oned import VM, Disk, History, to_xml  # noqa: E402

SYS = f"/var/lib/one//datastores/{SYSTEM_DS}"

# fewest LINSTOR requests / remote commands each action could need (with the reason)
MINIMUM = {
    "ln": (2, 1, "make-available on the host + set owner props; one remote ln"),
    "mvds": (2, 1, "delete the host's diskless replica + clear props; one remote rm"),
    "delete": (2, 1, "list the image's replicas + delete the diskless one; one remote rm"),
    "resize": (2, 0, "read the volume size (refuse shrinking) + resize"),
    "snap_create": (2, 0, "create the snapshot + record its size"),
    "snap_delete": (2, 0, "clear the snapshot's size property + delete the snapshot"),
    "premigrate": (2, 2, "make-available on the destination + allow two primaries; tar out, tar in"),
    "postmigrate": (2, 2, "clear two primaries + delete the source replica; rm link, rm dir"),
    "failmigrate": (2, 2, "clear two primaries + delete the destination replica; rm link, rm dir"),
    "clone (snapshot)": (5, 1, "snapshot, RD create, VD restore, resource restore, props; one remote ln"),
    "clone (copy)": (4, 2, "spawn, attach source, attach target, props; dd + ln"),
    "mkimage": (3, 2, "spawn, attach, props; mkfs + ln"),
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

    def measure(self, result) -> dict:
        if not result.ok:
            raise RuntimeError(str(result))
        lines = self.stats.read_text().splitlines()
        self.stats.write_text("")
        s = json.loads(lines[-1])
        s["seconds"] = result.seconds
        return s

    def path(self, vm, disk=0):
        return f"{SYS}/{vm.id}/disk.{disk}"


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

    return {
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
        "mkimage": (b.new_vm, lambda vm: r.tm("mkimage", 64, "raw", f"node1:{SYS}/{vm.id}/disk.1", vm.id,
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
                stats.write_text("")
                samples.append(b.measure(action(ctx)))
            secs = sorted(s["seconds"] for s in samples)
            p90 = secs[min(len(secs) - 1, int(round(0.9 * (len(secs) - 1))))]
            mins = MINIMUM[name]
            rows.append({"action": name, "runs": runs, "median_s": round(statistics.median(secs), 3),
                         "p90_s": round(p90, 3),
                         "linstor_requests": max(s["linstor_requests"] for s in samples),
                         "min_requests": mins[0],
                         "ssh_connections": max(s["ssh_connections"] for s in samples),
                         "remote_commands": max(s["remote_commands"] for s in samples),
                         "min_commands": mins[1], "why_min": mins[2],
                         "startup_s": round(statistics.median(s["startup_seconds"] for s in samples), 3)})
        stats.unlink()
    return rows


def table(rows: list[dict]) -> str:
    head = ["action", "runs", "median_s", "p90_s", "linstor_requests", "min_requests", "ssh_connections",
            "remote_commands", "min_commands", "startup_s"]
    widths = [max(len(h), *(len(str(r[h])) for r in rows)) for h in head]
    out = ["  ".join(h.ljust(w) for h, w in zip(head, widths))]
    out += ["  ".join(str(r[h]).ljust(w) for h, w in zip(head, widths)) for r in rows]
    return "\n".join(out)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--json", default=str(REPO / "benchmarks" / "results.json"))
    args = p.parse_args()
    rows = run(args.runs)
    print(table(rows))
    Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
