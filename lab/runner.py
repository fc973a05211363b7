"""Run a driver file exactly as oned's MADs run it, for a given OpenNebula version.

What it reproduces (reference/opennebula-interface.md §1-§6, oned-7.0.2-trace.md):
- the command is one string handed to a shell, as Ruby's popen3 does; TM arguments are
  shell-escaped from 5.8 on (Shellwords.escape), joined raw on 5.6;
- stdin is always a pipe: the given data, or nothing;
- DS actions (and the system-DS monitor, and export): `<b64> <id>` up to 6.6, `- <id>` plus stdin
  with the `-i` option (6.4.4+/6.6.2+), `<id>` plus stdin from 6.8;
- pre/post/failmigrate: the VM template in argv $6 (5.6, 5.8) or on stdin (5.10+), the caller TM as
  $7 / $6;
- VMM local actions (save/restore overrides): base64 of the VMM_DRIVER_ACTION_DATA on stdin,
  wrapped every 60 characters before 5.12, one line from 5.12;
- working directory `$ONE_LOCATION/var` (or /var/lib/one), and the MAD's environment only.
"""
from __future__ import annotations

import base64
import shlex
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence


def parse_version(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.split(".")[:3])


@dataclass
class Result:
    command: str
    rc: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.rc == 0

    def __str__(self) -> str:
        return f"$ {self.command}\nrc={self.rc}\nstdout:\n{self.stdout}\nstderr:\n{self.stderr}"


class OnedRunner:
    def __init__(self, one_location: Path, version: str, env: dict[str, str], driver: str = "linstor_un",
                 ds_stdin_option: bool = False, timeout: float = 600,
                 saveas: Optional[Callable[..., Callable[[], None]]] = None):
        self.one_location = Path(one_location)
        self.remotes = self.one_location / "var" / "remotes"
        self.version = version
        self.v = parse_version(version)
        self.env = dict(env)
        self.driver = driver
        self.ds_stdin_option = ds_stdin_option
        self.timeout = timeout
        self.history: list[Result] = []
        self.saveas = saveas            # the lab oned's save-as flags (OnedEndpoint.saving_as)

    # ---- plumbing ------------------------------------------------------------------------------
    def _run(self, command: str, stdin: bytes = b"", extra_env: Optional[dict] = None,
             kill_when: Optional[Callable[[], bool]] = None, kill_signal: int = 9) -> Result:
        """kill_when: polled while the action runs; when it says so, the action (its whole process
        group) gets SIGKILL, as a crash or `kill -9` of the driver would (rc -9), or `kill_signal`
        (SIGTERM: a cancel), once."""
        import os
        import signal
        import tempfile
        env = {**self.env, **(extra_env or {})}
        # the release oned would be: the remotes' VERSION file, as this runner's (several runners
        # of different releases may be used in turn)
        stamp = self.one_location / "var" / "remotes" / "VERSION"
        if stamp.parent.is_dir() and (not stamp.exists() or stamp.read_text() != self.version + "\n"):
            stamp.write_text(self.version + "\n")
        start = time.monotonic()
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(command, shell=True, stdin=subprocess.PIPE, stdout=out, stderr=err, env=env,
                                    cwd=str(self.one_location / "var"), start_new_session=True)
            try:
                proc.stdin.write(stdin)
                proc.stdin.close()
            except BrokenPipeError:                    # the action did not read it all: its business
                pass
            signalled = False
            while True:
                try:
                    rc = proc.wait(timeout=0.02)       # returns as soon as the action ends
                    break
                except subprocess.TimeoutExpired:
                    if kill_when is not None and kill_when():
                        os.killpg(proc.pid, kill_signal)
                        if kill_signal != signal.SIGKILL:
                            kill_when = None        # once; the action then ends by itself
                            signalled = True
                    elif time.monotonic() - start > self.timeout:
                        os.killpg(proc.pid, signal.SIGKILL)
                        proc.wait()
                        raise subprocess.TimeoutExpired(command, self.timeout)
            while signalled and time.monotonic() - start < self.timeout:
                try:                                   # the shell went at once; the action undoes its work
                    os.killpg(proc.pid, 0)
                    time.sleep(0.05)
                except ProcessLookupError:
                    break
            out.seek(0)
            err.seek(0)
            result = Result(command, rc, out.read().decode(errors="replace"), err.read().decode(errors="replace"),
                            time.monotonic() - start)
        self.history.append(result)
        return result

    def _join(self, args: list[str]) -> str:
        if self.v < (5, 8, 0):
            return " ".join(str(a) for a in args)
        return " ".join(shlex.quote(str(a)) for a in args)

    @staticmethod
    def b64(data: str) -> str:
        return base64.b64encode(data.encode()).decode()

    # ---- TM ------------------------------------------------------------------------------------
    def tm_script(self, action: str, system_tm: Optional[str] = None) -> Path:
        base = self.remotes / "tm" / self.driver
        if system_tm and self.v >= (5, 10, 0):
            suffixed = base / f"{action.lower()}.{system_tm}"
            if suffixed.exists():
                return suffixed
        return base / action.lower()

    def tm(self, action: str, *args, system_tm: Optional[str] = None,
           kill_when: Optional[Callable[[], bool]] = None, oned_saveas: bool = True) -> Result:
        """One line of a transfer file: `ACTION[.sys] linstor_un args...`. A CPDS line comes after
        oned flagged the save-as (the lab's oned does it here; `oned_saveas=False`: a line oned
        did not ask for)."""
        script = self.tm_script(action, system_tm)
        done = self.saveas(*map(str, args)) if action == "cpds" and oned_saveas and self.saveas and len(args) == 5 \
            else (lambda: None)
        try:
            return self._run(f"{script} {self._join([str(a) for a in args])}".rstrip(), kill_when=kill_when)
        finally:
            done()

    def transfer(self, lines: list[str]) -> list[Result]:
        """A whole transfer file, run line by line and stopped at the first failure (one_tm)."""
        results = []
        for line in lines:
            words = line.split()
            action, _, system_tm = words[0].partition(".")
            if words[1] != self.driver:
                raise ValueError(f"transfer line for another driver: {line}")
            result = self.tm(action, *words[2:], system_tm=system_tm or None)
            results.append(result)
            if not result.ok:
                break
        return results

    def migrate(self, action: str, src: str, dst: str, vmdir: str, vmid: int, sys_ds: int, vm_xml: str,
                caller: Optional[str] = None, kill_when: Optional[Callable[[], bool]] = None,
                kill_signal: int = 9) -> Result:
        """premigrate / postmigrate / failmigrate of the system datastore's TM."""
        script = self.remotes / "tm" / self.driver / action
        b64 = self.b64(vm_xml)
        args = [src, dst, vmdir, vmid, sys_ds]
        if self.v < (5, 10, 0):
            args.append(b64)
            if caller:
                args.append(caller)
            return self._run(f"{script} {self._join(args)}", kill_when=kill_when, kill_signal=kill_signal)
        if caller:
            args.append(caller)
        return self._run(f"{script} {self._join(args)}", stdin=b64.encode(), kill_when=kill_when,
                         kill_signal=kill_signal)

    def backup_step(self, action: str, host: str, vm_dir: str, disk_ids: list[int], deploy_id: str, vm_id: int,
                    sys_ds: int, vm_xml: str, job_id: Optional[int] = None,
                    kill_when: Optional[Callable[[], bool]] = None, kill_signal: int = 9) -> Result:
        """TM pre/postbackup[_live] as one_vmm_exec runs them: the backup job id (or `-`) after the
        deploy id from 6.8 on; the VM XML raw on stdin."""
        args = [f"{host}:{vm_dir}", ":".join(str(d) for d in disk_ids), deploy_id]
        if self.v >= (6, 8, 0):
            args.append("-" if job_id is None else job_id)
        args += [vm_id, sys_ds]
        script = self.remotes / "tm" / self.driver / action
        return self._run(f"{script} {self._join([str(a) for a in args])}", stdin=vm_xml.encode(),
                         kill_when=kill_when, kill_signal=kill_signal)

    # ---- DS ------------------------------------------------------------------------------------
    def _ds_style(self, script: Path, data_xml: str, obj_id: int,
                  kill_when: Optional[Callable[[], bool]] = None) -> Result:
        b64 = self.b64(data_xml)
        if self.v >= (6, 8, 0):
            return self._run(f"{script} {obj_id}", stdin=b64.encode(), kill_when=kill_when)
        if self.ds_stdin_option:
            return self._run(f"{script} - {obj_id}", stdin=b64.encode(), kill_when=kill_when)
        return self._run(f"{script} {b64} {obj_id}", kill_when=kill_when)

    def ds(self, action: str, data_xml: str, obj_id: int, kill_when: Optional[Callable[[], bool]] = None) -> Result:
        """A DS action: data_xml is the DS_DRIVER_ACTION_DATA document."""
        return self._ds_style(self.remotes / "datastore" / self.driver / action, data_xml, obj_id, kill_when)

    def tm_monitor(self, data_xml: str, ds_id: int) -> Result:
        """oned monitoring a SHARED system datastore: one_datastore runs tm/<TM_MAD>/monitor."""
        return self._ds_style(self.remotes / "tm" / self.driver / "monitor", data_xml, ds_id)

    # ---- VMM -----------------------------------------------------------------------------------
    def vmm_local(self, script_name: str, args: list, vmm_xml: str, extra_env: Optional[dict] = None,
                  kill_when: Optional[Callable[[], bool]] = None, kill_signal: int = 9) -> Result:
        """A local VMM action (-l save=save_linstor_un,...): runs on the front-end."""
        script = self.remotes / "vmm" / "kvm" / script_name
        if self.v >= (5, 12, 0):
            payload = base64.b64encode(vmm_xml.encode())
        else:
            payload = base64.encodebytes(vmm_xml.replace("\n", "").encode())
        return self._run(f"{script} {' '.join(str(a) for a in args)}", stdin=payload, extra_env=extra_env,
                         kill_when=kill_when, kill_signal=kill_signal)

    def save(self, deploy_id: str, checkpoint: str, host: str, vm_id: int, vmm_xml: str) -> Result:
        return self.vmm_local("save_linstor_un", [deploy_id, checkpoint, host, vm_id, host], vmm_xml)

    def restore(self, checkpoint: str, host: str, deploy_id: str, vm_id: int, vmm_xml: str) -> Result:
        return self.vmm_local("restore_linstor_un", [checkpoint, host, deploy_id, vm_id, host], vmm_xml)

    def vm_snapshot(self, action: str, deploy_id: str, snapshot: str, vm_id: int, host: str, vmm_xml: str,
                    extra_env: Optional[dict] = None, kill_when: Optional[Callable[[], bool]] = None,
                    kill_signal: int = 9) -> Result:
        """snapshot_create (`snapshot`: oned's SNAPSHOT_ID), snapshot_revert or snapshot_delete (its
        HYPERVISOR_ID); one_vmm_exec.rb appends the VM id and host to a local action's parameters,
        and 7.x quotes those of the revert step (VmmAction#get_parameters)."""
        if action == "revert" and self.v >= (7, 0, 0):
            params = [f"'{deploy_id}'", f"'{snapshot}'"]
        else:
            params = [deploy_id, snapshot]
        return self.vmm_local(f"snapshot_{action}_linstor_un", [*params, vm_id, host], vmm_xml, extra_env,
                              kill_when, kill_signal)


def ds_action_data(image_xml: str, datastore_xml: str, extra: str = "") -> str:
    """DS_DRIVER_ACTION_DATA as ImageManager::format_message builds it."""
    return f"<DS_DRIVER_ACTION_DATA>{image_xml}{datastore_xml}{extra}</DS_DRIVER_ACTION_DATA>"


def vmm_action_data(vm_xml: str, datastore_xml: str, host: str, deploy_id: str, checkpoint: str,
                    migr_host: str = "", tm_command: str = "", disk_target_path: str = "") -> str:
    """VMM_DRIVER_ACTION_DATA as VirtualMachineManager::format_message builds it."""
    return ("<VMM_DRIVER_ACTION_DATA>"
            f"<HOST>{host}</HOST><MIGR_HOST>{migr_host}</MIGR_HOST><DEPLOY_ID>{deploy_id}</DEPLOY_ID>"
            "<LOCAL_DEPLOYMENT_FILE></LOCAL_DEPLOYMENT_FILE><REMOTE_DEPLOYMENT_FILE></REMOTE_DEPLOYMENT_FILE>"
            f"<CHECKPOINT_FILE>{checkpoint}</CHECKPOINT_FILE><TM_COMMAND>{tm_command}</TM_COMMAND>"
            f"<TM_COMMAND_ROLLBACK></TM_COMMAND_ROLLBACK><DISK_TARGET_PATH>{disk_target_path}</DISK_TARGET_PATH>"
            f"{vm_xml}{datastore_xml}</VMM_DRIVER_ACTION_DATA>")


def mad_environment(home: Path, one_location: Path, extra_path: Optional[str] = None,
                    ssh_dirs: Sequence[Path] = ()) -> dict[str, str]:
    """The environment a MAD started by oned passes on: oneadmin's HOME, the packaged PATH
    (OpenNebula's override directory first; `ssh_dirs`, the lab's stand-ins, in front of it),
    ONE_LOCATION for the self-contained layout, defaultrc's variables. No ONE_AUTH/ONE_XMLRPC."""
    path = ":".join([*(str(d) for d in ssh_dirs), "/usr/lib/one/sh/override", "/usr/local/sbin",
                     "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"])
    env = {"HOME": str(home), "PATH": path, "ONE_LOCATION": str(one_location), "USER": "oneadmin",
           "LOGNAME": "oneadmin", "ONE_MAD_DEBUG": "", "PRIORITY": "19"}
    if extra_path:
        env["PYTHONPATH"] = extra_path
    return env
