"""The whole lab in one object: LINSTOR emulator, simulated hosts, oned endpoint, front-end tree.

    with Lab(LabConfig(hosts=3)) as lab:
        result = lab.runner().tm("clone", "one-frontend:one-image-0", "node1:/var/lib/one//datastores/101/5/disk.0",
                                 5, 100)

The front-end is this machine's root namespace (drivers run here, as oned's MADs do), laid out as a
self-contained OpenNebula install under `<workdir>/one` (ONE_LOCATION): var/remotes with the driver
files, etc/monitord.conf pointing at the lab's onemonitord listener. oneadmin's HOME is
`<workdir>/home` with ~/.ssh (config, key, known_hosts) and ~/.one (one_auth, one_endpoint).
The front-end is also reachable over SSH as host `one-frontend`, like a real one (tm/mv to it).

SSH is a packaged front-end's (ssh_profile="packaged", the default): OpenNebula's ssh wrapper first
on PATH (the lab's stand-in, lab/hosts.py), the packaged `Host *` block with ControlMaster,
ControlPersist 70s and a ControlPath, the host blocks in an Included file, and in labs of three
nodes or more the last node behind a jump host (ProxyJump). ssh_profile="plain": no wrapper and no
Control* options (a front-end set up by hand): the driver makes its own per-action masters.
"""
from __future__ import annotations

import base64
import os
import shutil
import socket
import sys
import tempfile
import threading
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from .hosts import SimHost, make_keys, write_client_config, write_ssh_programs
from .linstor_emu.process import EmulatorConfig, LinstorEmulator, free_port
from .linstor_emu.versions import NEWEST as NEWEST_LINSTOR
from .oned import Datastore, Host, OnedEndpoint
from .runner import OnedRunner, mad_environment

REPO = Path(__file__).resolve().parents[1]
FRONTEND = "one-frontend"
JUMP = "jump"               # an SSH jump host (no LINSTOR node, no hypervisor)
IMAGE_DS = 100
SYSTEM_DS = 101
POOL = "data"
RESOURCE_GROUP = "one_rg"


@dataclass
class LabConfig:
    hosts: int = 3
    libvirt: bool = False
    version: str = "7.0.2"
    tls: bool = False
    pool_kib: int = 20 * 1024 * 1024
    provider_kind: str = "LVM_THIN"
    workdir: Optional[Path] = None
    validate_schema: bool = True
    controller_props: dict = field(default_factory=dict)
    install_driver: bool = True
    # the controller version the emulator plays; LAB_LINSTOR_VERSION changes the default (the
    # version matrix: tests/versions)
    linstor_version: str = field(default_factory=lambda: os.environ.get("LAB_LINSTOR_VERSION", NEWEST_LINSTOR))
    ssh_profile: str = "packaged"       # or "plain" (see the module's doc)
    jump: Optional[bool] = None         # the last node behind a jump host (default: with 3+ nodes)


class MonitorListener:
    """onemonitord's UDP socket: keeps each message `TYPE RESULT OID TS PAYLOAD` decoded."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.messages: list[dict] = []
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while True:
            try:
                data, _ = self.sock.recvfrom(1 << 20)
            except OSError:
                return
            parts = data.decode(errors="replace").strip().split(" ", 4)
            msg = {"raw": data, "type": parts[0] if parts else ""}
            if len(parts) == 5:
                msg.update({"result": parts[1], "oid": parts[2], "ts": parts[3]})
                try:
                    msg["payload"] = zlib.decompress(base64.b64decode(parts[4])).decode()
                except (ValueError, zlib.error):
                    msg["payload"] = parts[4]
            self.messages.append(msg)

    def close(self) -> None:
        self.sock.close()


class Lab:
    def __init__(self, config: Optional[LabConfig] = None):
        self.config = config or LabConfig()
        self._own_workdir = self.config.workdir is None
        self.workdir = Path(self.config.workdir or tempfile.mkdtemp(prefix="linstor_un-lab-"))
        self.home = self.workdir / "home"
        self.one_location = self.workdir / "one"
        self.hosts: dict[str, SimHost] = {}
        self.linstor: Optional[LinstorEmulator] = None
        self.oned: Optional[OnedEndpoint] = None
        self.monitor: Optional[MonitorListener] = None
        self.tls: Optional[dict] = None
        self.socks: Optional[Path] = None       # ControlPath directory (short: sun_path is 108 bytes)
        self.ssh_bin = self.workdir / "bin"
        self.ssh_override = self.workdir / "override"

    # ---- lifecycle -------------------------------------------------------------------------------
    def __enter__(self) -> "Lab":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        cfg = self.config
        ssh_dir = self.home / ".ssh"
        client_key, host_key = make_keys(ssh_dir)
        authorized = self.workdir / "authorized_keys"
        authorized.write_text(Path(str(client_key) + ".pub").read_text())
        names = [f"node{i}" for i in range(1, cfg.hosts + 1)]
        jumped = cfg.jump if cfg.jump is not None else cfg.hosts >= 3
        for i, name in enumerate(names + [FRONTEND] + ([JUMP] if jumped else [])):
            address = {FRONTEND: "127.0.0.10", JUMP: "127.0.0.9"}.get(name, f"127.0.0.{11 + i}")
            host = SimHost(name, address, free_port(address), self.workdir / "hosts" / name,
                           libvirt=cfg.libvirt and name not in (FRONTEND, JUMP))
            self.hosts[name] = host
            host.start(authorized, host_key)
        self.socks = Path(tempfile.mkdtemp(prefix="lsu-socks-"))
        write_client_config(ssh_dir, list(self.hosts.values()), client_key, host_key,
                            packaged=cfg.ssh_profile == "packaged", socks=self.socks,
                            jumps={names[-1]: JUMP} if jumped else {})
        write_ssh_programs(self.ssh_bin, self.ssh_override)
        if cfg.tls:
            from .certs import make_tls
            self.tls = make_tls(self.workdir / "tls")
        nodes = [{"name": n, "address": self.hosts[n].address,
                  "pools": [{"name": POOL, "provider_kind": cfg.provider_kind, "total_kib": cfg.pool_kib}]}
                 for n in names]
        self.linstor = LinstorEmulator(EmulatorConfig(
            state_dir=self.workdir / "linstor", nodes=nodes,
            resource_groups=[{"name": RESOURCE_GROUP, "select_filter": {"place_count": 2,
                                                                        "storage_pool_list": [POOL]}}],
            host_devdirs={n: str(self.hosts[n].devdir) for n in names},
            tls=({"cert": self.tls["server_cert"], "key": self.tls["server_key"], "ca": self.tls["ca"],
                  "require_client_cert": True} if self.tls else None),
            validate_schema=cfg.validate_schema, controller_props=cfg.controller_props,
            version=cfg.linstor_version))
        self.linstor.start()
        self._thin_standins()
        self.monitor = MonitorListener()
        self.oned = OnedEndpoint(version=cfg.version)
        self.oned.start()
        for hid, name in enumerate(names):
            self.oned.add(Host(hid, name))
        self.oned.add(Datastore(IMAGE_DS, "linstor_images", "IMAGE_DS", template=self.datastore_template()))
        self.oned.add(Datastore(SYSTEM_DS, "linstor_system", "SYSTEM_DS", ds_mad="-",
                                template=self.datastore_template()))
        self._frontend_tree()

    def _thin_standins(self) -> None:
        """`lvs` and `dmsetup` on every host: the LVM thin pool stand-in (lab/thin_standin.py)
        over the emulator's state, whose metadata the real thin_delta reads."""
        state = self.workdir / "linstor" / "controller-state.json"
        data = self.workdir / "linstor" / "data"
        for host in self.hosts.values():
            sbin = host.path("/usr/local/sbin")
            sbin.mkdir(parents=True, exist_ok=True)
            for tool in ("lvs", "dmsetup"):
                shim = sbin / tool
                shim.write_text(f"#!/bin/sh\n# the lab's LVM thin stand-in (lab/thin_standin.py)\n"
                                f"exec /usr/bin/python3 {REPO / 'lab' / 'thin_standin.py'} {state} {data} {tool} \"$@\"\n")
                shim.chmod(0o755)

    def close_masters(self) -> None:
        """End every SSH master connection to the lab's hosts (OpenNebula's shared ones)."""
        for name in self.hosts:
            self._ssh(["-O", "exit", name], check=False)

    def warm_masters(self) -> None:
        """A master connection to every node, as any action or probe of the last 70 s leaves one."""
        for name in self.node_names:
            self._ssh(["-o", "ControlMaster=auto", name, "true"], check=True)

    def _ssh(self, args: list[str], check: bool):
        import subprocess
        return subprocess.run([str(self.ssh_bin / "ssh"), *args], env={**os.environ, "HOME": str(self.home)},
                              capture_output=True, timeout=30, check=check)

    def stop(self) -> None:
        if self.linstor:
            self.linstor.shutdown()
        if self.socks is not None and self.hosts:
            try:
                self.close_masters()
            except Exception:
                pass
        for host in self.hosts.values():
            host.stop()
        if self.socks is not None:
            shutil.rmtree(self.socks, ignore_errors=True)
        if self.oned:
            self.oned.stop()
        if self.monitor:
            self.monitor.close()
        if self._own_workdir and not os.environ.get("LAB_KEEP"):
            shutil.rmtree(self.workdir, ignore_errors=True)

    # ---- the front-end ---------------------------------------------------------------------------
    def _frontend_tree(self) -> None:
        one = self.one_location
        remotes = one / "var" / "remotes"
        for sub in ("tm", "datastore", "vmm/kvm", "etc/datastore/linstor_un"):
            (remotes / sub).mkdir(parents=True, exist_ok=True)
        (one / "etc" / "vmm_exec").mkdir(parents=True, exist_ok=True)
        (remotes / "VERSION").write_text(self.config.version + "\n")
        (one / "etc" / "monitord.conf").write_text(
            f'NETWORK = [\n  ADDRESS = "127.0.0.1",\n  PORT = {self.monitor.port},\n  THREADS = 2,\n'
            f'  MONITOR_ADDRESS = "auto",\n  PUBKEY = "",\n  PRIKEY = ""\n]\n')
        if (parse_major(self.config.version) >= (5, 12)):
            (remotes / "im" / "kvm-probes.d" / "vm" / "monitor").mkdir(parents=True, exist_ok=True)
        conf = remotes / "etc" / "datastore" / "linstor_un" / "linstor_un.conf"
        if not conf.exists():
            conf.write_text("")
        one_dir = self.home / ".one"
        one_dir.mkdir(parents=True, exist_ok=True)
        (one_dir / "one_auth").write_text(self.oned.auth + "\n")
        (one_dir / "one_endpoint").write_text(self.oned.url + "\n")
        if self.config.install_driver:
            self.install_driver()

    def install_driver(self, root: Path = REPO) -> None:
        """Put the repository's driver files (or another tree's: benchmarks against an older
        version) into the lab's remotes, the way install.py would: same layout, executable, the
        interpreter that has the driver's dependencies."""
        remotes = self.one_location / "var" / "remotes"
        for rel in ("tm/linstor_un", "datastore/linstor_un"):
            src = root / rel
            if src.is_dir():
                dst = remotes / rel
                shutil.rmtree(dst, ignore_errors=True)
                shutil.copytree(src, dst, symlinks=True)
                for f in dst.iterdir():
                    self._fix_interpreter(f)
        for f in (root / "vmm" / "kvm").glob("*") if (root / "vmm" / "kvm").is_dir() else []:
            dst = remotes / "vmm" / "kvm" / f.name
            shutil.copy2(f, dst)
            self._fix_interpreter(dst)

    @staticmethod
    def _fix_interpreter(path: Path) -> None:
        if path.is_symlink() or not path.is_file():
            return
        text = path.read_bytes()
        if text.startswith(b"#!") and b"python" in text.split(b"\n", 1)[0]:
            # LAB_DRIVER_PYTHON: another interpreter (the version matrix: the oldest python-linstor)
            python = os.environ.get("LAB_DRIVER_PYTHON") or sys.executable
            path.write_bytes(f"#!{python}\n".encode() + text.split(b"\n", 1)[1])
        path.chmod(0o755)

    # ---- handles ---------------------------------------------------------------------------------
    def runner(self, version: Optional[str] = None, **kw) -> OnedRunner:
        version = version or self.config.version
        stamp = self.one_location / "var" / "remotes" / "VERSION"
        if not stamp.exists() or stamp.read_text() != version + "\n":     # (back to the default too)
            stamp.write_text(version + "\n")
        env = mad_environment(self.home, self.one_location, extra_path=str(REPO / "lib"), ssh_dirs=self.ssh_dirs)
        kw.setdefault("saveas", self.oned.saving_as if self.oned else None)
        return OnedRunner(self.one_location, version, env, **kw)

    def datastore_template(self, **extra: str) -> dict:
        url = self.linstor.https_url if self.tls else self.linstor.url
        t = {"LS_CONTROLLERS": url, "BRIDGE_LIST": " ".join(self.node_names),
             "RESOURCE_GROUP": RESOURCE_GROUP, "DISK_TYPE": "BLOCK"}
        if self.tls:
            t.update({"LS_CERTFILE": self.tls["client_cert"], "LS_KEYFILE": self.tls["client_key"],
                      "LS_CAFILE": self.tls["ca"]})
        t.update(extra)
        return t

    @property
    def ssh_dirs(self) -> list[Path]:
        """What goes in front of the MADs' PATH: OpenNebula's wrapper (packaged), the lab's ssh."""
        return ([self.ssh_override] if self.config.ssh_profile == "packaged" else []) + [self.ssh_bin]

    def host(self, name: str) -> SimHost:
        return self.hosts[name]

    @property
    def node_names(self) -> list[str]:
        return [n for n in self.hosts if n not in (FRONTEND, JUMP)]

    def client(self):
        """A python-linstor client on the emulator (for setting up and checking state)."""
        import linstor
        if self.tls:
            client = linstor.MultiLinstor([self.linstor.https_url])
            client.certfile, client.keyfile, client.cafile = (self.tls["client_cert"], self.tls["client_key"],
                                                              self.tls["ca"])
            return client
        return linstor.MultiLinstor([self.linstor.url])

    def fail_command(self, host: str, command: str, message: str = "injected failure") -> Path:
        """Make `command` fail on a host (a shim in that host's own /usr/local/bin); returns the shim."""
        shim = self.hosts[host].path("/usr/local/bin") / command
        shim.write_text(f"#!/bin/sh\necho '{message}: {command}' >&2\nexit 1\n")
        shim.chmod(0o755)
        return shim

    def clear_command_faults(self) -> None:
        for host in self.hosts.values():
            for shim in host.path("/usr/local/bin").glob("*"):
                shim.unlink()

    def read_device(self, node: str, device: str, offset: int = 0, length: int = 4096) -> bytes:
        """Read bytes of a device as seen on a host (inside its namespace)."""
        cmd = (f"dd if={device} bs=4096 iflag=skip_bytes,count_bytes skip={offset} count={length} "
               f"status=none")
        return self.hosts[node].run_inside(cmd).stdout

    def write_device(self, node: str, device: str, data: bytes, offset: int = 0) -> None:
        cmd = f"dd of={device} bs=4096 oflag=seek_bytes seek={offset} conv=notrunc,fsync status=none"
        self.hosts[node].run_inside(cmd, input=data)


def parse_major(version: str) -> tuple[int, int]:
    parts = version.split(".")
    return int(parts[0]), int(parts[1])
