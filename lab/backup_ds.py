"""OpenNebula's side of VM backups, played in the lab: oned's bookkeeping and an rsync-style backup
datastore, written here from the contract OpenNebula 7.0.2 showed
(shared/fixtures/one-7.0.2-backup/README.md) — not OpenNebula's code.

- `backup()` runs one backup as one_vmm_exec does: TM prebackup[_live], then the datastore's
  `backup` step (the host's `<vm_dir>/backup/` copied over SSH into `<BASE_PATH>/<vm>/<6 hex>/`;
  like rsync's, it fails when there is no `disk.*` file), then TM postbackup[_live] (also after a
  failure), and on success oned's bookkeeping: a new backup image (FULL mode, or a new chain) or
  one more increment (its DATE: when oned recorded it), LAST_INCREMENT_ID, and the flatten when
  the chain exceeds KEEP_LAST.
- Two stand-ins go into the lab's remotes: `datastore/rsync/ls -i <increment>` (the disks of a
  backup image as `rsync://<ds>/<job>/<inc:src,...>/<path>` URLs, as TM restore asks for them)
  and `datastore/downloader.sh --nodecomp <url> <file|->`, which rebuilds an increment chain the
  way OpenNebula's downloader does: each file given the previous one as backing file with
  `qemu-img rebase -u`, then the last converted into one qcow2.
"""
from __future__ import annotations

import os
import secrets
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .oned import Datastore, Image, to_xml

BACKUP_DS = 106

LS = r'''#!{python}
"""Lab stand-in of a backup datastore's `ls -i <increment>`."""
import json, os, sys
import xml.etree.ElementTree as ET

inc = int(sys.argv[sys.argv.index("-i") + 1]) if "-i" in sys.argv else -1
doc = ET.fromstring(sys.stdin.read())
ds = doc.find("DATASTORE")
password = ds.findtext("TEMPLATE/RESTIC_PASSWORD")
if password is not None and password.strip() != ds.findtext("TEMPLATE/LAB_REPOSITORY_PASSWORD", ""):
    sys.exit("Fatal: wrong password or no key found")     # (restic's words: the repository stays closed)
image = doc.find("IMAGE")
base = ds.findtext("BASE_PATH").rstrip("/")
vm = image.findtext("VMS/ID")
job = image.findtext("TEMPLATE/BACKUP_JOB_ID") or ""
chain = [(int(i.findtext("ID")), i.findtext("SOURCE")) for i in image.findall("BACKUP_INCREMENTS/INCREMENT")]
if not chain:
    chain = [(0, image.findtext("SOURCE"))]
last_id, last_src = chain[-1]
if inc >= 0:
    chain = [c for c in chain if c[0] <= inc]
spec = ",".join("%d:%s" % c for c in chain)
folder = "%s/%s/%s" % (base, vm, last_src)
out = {}
for name in sorted(os.listdir(folder)):
    parts = name.split(".")
    if len(parts) == 3 and parts[0] == "disk":
        out[parts[1]] = "rsync://%s/%s/%s%s/disk.%s.%d" % (ds.findtext("ID"), job, spec, folder, parts[1], last_id)
print(json.dumps(out))
'''

DOWNLOADER = r'''#!{python}
"""Lab stand-in of OpenNebula's downloader.sh for rsync:// backup URLs (and local files)."""
import os, shutil, subprocess, sys, tempfile

args = [a for a in sys.argv[1:] if not a.startswith("--")]
url, dst = args[0], args[1]
if not url.startswith("rsync://"):
    src = open(url, "rb")
else:
    ds, job, spec, path = url[len("rsync://"):].split("/", 3)
    path = "/" + path
    disk = os.path.basename(path).split(".")[1]
    vm_dir = os.path.dirname(os.path.dirname(path))
if url.startswith("rsync://") and disk == "tpm":           # the vTPM state: a tar.gz of the last backup
    src = open(path, "rb")
elif url.startswith("rsync://"):
    work = tempfile.mkdtemp(prefix="lab-download-")
    files = []
    for item in spec.split(","):
        inc, source = item.split(":")
        copy = os.path.join(work, "disk.%s.%s" % (disk, inc))
        shutil.copyfile(os.path.join(vm_dir, source, "disk.%s.%s" % (disk, inc)), copy)
        files.append(copy)
    for backing, top in zip(files, files[1:]):
        subprocess.run(["qemu-img", "rebase", "-u", "-F", "qcow2", "-b", backing, top], check=True)
    merged = os.path.join(work, "merged.qcow2")
    subprocess.run(["qemu-img", "convert", "-O", "qcow2", files[-1], merged], check=True)
    src = open(merged, "rb")
    shutil.rmtree(work)                 # the open file stays readable
out = sys.stdout.buffer if dst == "-" else open(dst, "wb")
shutil.copyfileobj(src, out, 1 << 20)
out.flush()
'''


@dataclass
class BackupRun:
    pre: object
    post: Optional[object] = None
    source: str = ""
    image_id: Optional[int] = None
    increment: Optional[int] = None
    error: str = ""                     # the backup datastore's step, when it failed

    @property
    def ok(self) -> bool:
        return bool(self.source) and self.pre.ok and self.post is not None and self.post.ok


class BackupDatastore:
    def __init__(self, lab, ds_id: int = BACKUP_DS, first_image_id: int = 900):
        self.lab = lab
        self.failure_result = False         # True: as OpenNebula 7.4.1+ (BACKUP_RESULT after a failure)
        self.ds_id = ds_id
        self.root = lab.workdir / "backups" / str(ds_id)
        self.root.mkdir(parents=True, exist_ok=True)
        self.next_image = first_image_id
        lab.oned.add(Datastore(ds_id, "backups", "BACKUP_DS", ds_mad="rsync", tm_mad="-", base_path=str(self.root)))
        remotes = lab.one_location / "var" / "remotes" / "datastore"
        (remotes / "rsync").mkdir(parents=True, exist_ok=True)
        for path, text in ((remotes / "rsync" / "ls", LS), (remotes / "downloader.sh", DOWNLOADER)):
            path.write_text(text.replace("{python}", sys.executable))
            path.chmod(0o755)

    # ---- the datastore's backup step -----------------------------------------------------------
    def copy_away(self, host: str, vm_id: int, vm_dir: str) -> str:
        """As rsync's `backup`: the backup directory of the VM, over SSH, into a new folder."""
        source = secrets.token_hex(3)
        dest = self.root / str(vm_id) / source
        dest.mkdir(parents=True)
        config = self.lab.home / ".ssh" / "config"
        listing = subprocess.run(["ssh", "-F", str(config), host, f"ls {shlex.quote(vm_dir)}/backup/disk.*"],
                                 capture_output=True, text=True)
        if listing.returncode != 0:
            raise RuntimeError(f"Error copying backup: {listing.stderr.strip()}")
        pipe = subprocess.run(f"ssh -F {shlex.quote(str(config))} {host} tar -C {shlex.quote(vm_dir + '/backup')} "
                              f"-cf - . | tar -C {shlex.quote(str(dest))} -xf -", shell=True, capture_output=True)
        if pipe.returncode != 0:
            raise RuntimeError(f"Error copying backup: {pipe.stderr.decode(errors='replace')}")
        return source

    # ---- onevm backup-cancel ---------------------------------------------------------------------
    def cancel(self, disk_ids: list[int]) -> subprocess.CompletedProcess:
        """What the rsync and restic datastores' backup_cancel does first, on the front-end: TERM to
        every `ps -C ruby` process whose command line matches `(pre)?backup(_live)? .*<ARGV[1]> `,
        ARGV[1] being the backup's disk ids (`backup_cancel <host>:<dir> <disks> <deploy> ...`)."""
        disks = ":".join(str(d) for d in disk_ids)
        script = ("(ps --no-headers -o pid,cmd -C ruby | awk '$0 ~ \"(pre)?backup(_live)? .*%s \" "
                  "{ print $1 }') | xargs -r kill -s TERM" % disks)
        # (oned's drivers run without COLUMNS: with it, ps would cut the command lines it prints)
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
        return subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env)

    # ---- one backup, as one_vmm_exec and oned do it ----------------------------------------------
    def backup(self, runner, vm, disk_ids: list[int], live: bool, host: Optional[str] = None,
               kill_when=None, job_id: Optional[int] = None, kill_signal: int = 9) -> BackupRun:
        from .lab import SYSTEM_DS
        host = host or vm.history[-1].hostname
        vm_dir = f"/var/lib/one//datastores/{SYSTEM_DS}/{vm.id}"
        state = vm.lcm_state
        vm.lcm_state = "BACKUP" if live else "BACKUP_POWEROFF"
        xml = to_xml(vm.element())
        suffix = "_live" if live else ""
        deploy = vm.deploy_id or f"one-{vm.id}"
        try:
            run = BackupRun(runner.backup_step("prebackup" + suffix, host, vm_dir, disk_ids, deploy, vm.id,
                                               SYSTEM_DS, xml, job_id, kill_when=kill_when,
                                               kill_signal=kill_signal))
            if run.pre.ok:
                try:
                    run.source = self.copy_away(host, vm.id, vm_dir)
                except RuntimeError as err:
                    run.error = str(err)
            post_xml = xml
            if not run.source and self.failure_result:
                # 7.4.1+: postbackup after a failed step gets the VM with BACKUP_RESULT=FAILURE
                # (one_vmm_exec.rb backup: failure_vm_xml)
                post_xml = xml.replace("</VM>", "<BACKUP_RESULT>FAILURE</BACKUP_RESULT></VM>")
            run.post = runner.backup_step("postbackup" + suffix, host, vm_dir, disk_ids, deploy, vm.id, SYSTEM_DS,
                                          post_xml, job_id)
        finally:
            vm.lcm_state = state
        if run.ok:
            self._book(vm, run, disk_ids)
        return run

    def _book(self, vm, run: BackupRun, disk_ids: list[int]) -> None:
        cfg = vm.backup_config
        incremental = cfg.get("MODE", "FULL") == "INCREMENT"
        last = int(cfg.get("LAST_INCREMENT_ID", -1))
        if not incremental or last < 0:
            image = Image(self.next_image, f"{vm.id} {run.source}", self.ds_id, datastore="backups",
                          source=run.source, type=6, vms=[vm.id], backup_disk_ids=list(disk_ids), format="raw")
            self.next_image += 1
            self.lab.oned.add(image)
            vm.backup_ids.append(image.id)
            run.image_id, run.increment = image.id, 0
            if incremental:
                image.backup_increments = [{"ID": 0, "SOURCE": run.source, "TYPE": "FULL", "PARENT_ID": -1,
                                            "DATE": int(time.time())}]
                cfg.update(LAST_INCREMENT_ID=0, INCREMENTAL_BACKUP_ID=image.id)
            return
        image = self.lab.oned.images[int(cfg["INCREMENTAL_BACKUP_ID"])]
        image.backup_increments.append({"ID": last + 1, "SOURCE": run.source, "TYPE": "INCREMENT",
                                        "PARENT_ID": last, "DATE": int(time.time())})
        cfg["LAST_INCREMENT_ID"] = last + 1
        run.image_id, run.increment = image.id, last + 1
        keep = int(cfg.get("KEEP_LAST", 0) or 0)
        if keep and len(image.backup_increments) > keep:
            self.flatten(vm.id, image, keep)

    def flatten(self, vm_id: int, image: Image, keep_last: int) -> None:
        """As the backup datastore's increment_flatten: the oldest increments merged into one."""
        incs = image.backup_increments
        merged = incs[:len(incs) - keep_last + 1]
        folder = self.root / str(vm_id)
        disks = sorted({p.name.split(".")[1] for p in (folder / merged[-1]["SOURCE"]).glob("disk.*")})
        for disk in disks:
            files = [folder / i["SOURCE"] / f"disk.{disk}.{i['ID']}" for i in merged]
            files = [f for f in files if f.exists()]
            for backing, top in zip(files, files[1:]):
                subprocess.run(["qemu-img", "rebase", "-u", "-F", "qcow2", "-b", str(backing), str(top)], check=True)
            tmp = files[-1].with_suffix(".tmp")
            subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(files[-1]), str(tmp)], check=True)
            tmp.rename(files[-1])
        for i in merged[:-1]:
            subprocess.run(["rm", "-rf", str(folder / i["SOURCE"])], check=True)
        merged[-1].update(TYPE="FULL", PARENT_ID=-1)
        image.backup_increments = incs[len(incs) - keep_last:]

    def backup_with_snapshots_refused(self, runner, vm, disk_ids: list[int], live: bool, message: str) -> BackupRun:
        """A backup while the controller refuses the snapshot request (and its one retry)."""
        self.lab.linstor.add_fault(r"/v1/actions/snapshot/multi", "rc", method="POST", count=2,
                                   ret_code=-4611686018427386906, message=message)
        try:
            return self.backup(runner, vm, disk_ids, live=live)
        finally:
            self.lab.linstor.clear_faults()

    # ---- reading a backup back -------------------------------------------------------------------
    def urls(self, image_id: int, increment: int = -1) -> dict[int, str]:
        import json
        from .runner import ds_action_data
        image = self.lab.oned.images[image_id]
        ds = self.lab.oned.datastores[self.ds_id]
        vm = self.lab.oned.vms[image.vms[0]]
        data = ds_action_data(to_xml(image.element()), to_xml(ds.element()), to_xml(vm.element()))
        ls = self.lab.one_location / "var" / "remotes" / "datastore" / "rsync" / "ls"
        out = subprocess.run([str(ls), "-i", str(increment)], input=data, capture_output=True, text=True, check=True)
        return {int(k): v for k, v in json.loads(out.stdout).items()}

    def restored_bytes(self, image_id: int, disk_id: int, increment: int = -1) -> bytes:
        """The disk as a restore from this backup gives it back (the chain rebuilt, as raw)."""
        url = self.urls(image_id, increment)[disk_id]
        work = self.lab.workdir / f"restore-{secrets.token_hex(4)}"
        downloader = self.lab.one_location / "var" / "remotes" / "datastore" / "downloader.sh"
        subprocess.run([str(downloader), "--nodecomp", url, str(work) + ".qcow2"], check=True)
        subprocess.run(["qemu-img", "convert", "-O", "raw", str(work) + ".qcow2", str(work) + ".raw"], check=True)
        try:
            return Path(str(work) + ".raw").read_bytes()
        finally:
            Path(str(work) + ".qcow2").unlink()
            Path(str(work) + ".raw").unlink()
