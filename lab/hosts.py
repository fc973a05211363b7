"""Simulated hypervisor hosts: a real sshd per host, each in its own mount namespace.

Each host has a private directory tree in the lab that its namespace bind-mounts over the paths a
KVM host keeps to itself:

    <host>/dev        -> /dev                     (the emulated controller adds /dev/drbd* here)
    <host>/datastores -> /var/lib/one/datastores  (system datastore directories)
    <host>/remotes    -> /var/tmp/one             (what `onehost sync` puts on a host)
    <host>/libvirt/*  -> /run/libvirt, /var/lib/libvirt, /var/log/libvirt, /var/cache/libvirt, /etc/libvirt

Everything else (binaries, /usr) is the machine's own. sshd listens on the host's own loopback
address, so a command run over SSH sees exactly that host's devices and directories, and libvirtd
with virtlogd run inside the same namespace, so QEMU opens disks through the host's own /dev.
"""
from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

BASIC_DEVICES = ["null", "zero", "full", "random", "urandom", "tty", "kvm", "fuse", "net/tun", "loop-control"]
HOST_PATHS = {
    "datastores": "/var/lib/one/datastores",
    "remotes": "/var/tmp/one",
    "localbin": "/usr/local/bin",      # per-host command shims (fault injection)
    "localsbin": "/usr/local/sbin",    # per-host stand-ins (lvs, dmsetup: lab/thin_standin.py)
    "libvirt/run": "/run/libvirt",
    "libvirt/lib": "/var/lib/libvirt",
    "libvirt/log": "/var/log/libvirt",
    "libvirt/cache": "/var/cache/libvirt",
    "libvirt/etc": "/etc/libvirt",
}
QEMU_CONF_LAB = """
# linstor_un lab: QEMU runs as root inside the host's mount namespace, without cgroups or
# security drivers (no systemd here), and opens disks through the host's own /dev.
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
cgroup_controllers = [ ]
namespaces = [ ]
"""


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


@dataclass
class SimHost:
    name: str
    address: str
    port: int
    root: Path
    libvirt: bool = False
    proc: Optional[subprocess.Popen] = None
    mnt_ns: Optional[str] = None
    extra_dirs: dict[str, str] = field(default_factory=dict)

    @property
    def devdir(self) -> Path:
        return self.root / "dev"

    def path(self, host_path: str) -> Path:
        """Where a path inside this host lives in the lab tree (for assertions from outside)."""
        host_path = os.path.normpath(host_path)
        for rel, target in {**HOST_PATHS, "dev": "/dev"}.items():
            if host_path == target or host_path.startswith(target + "/"):
                return self.root / rel / os.path.relpath(host_path, target)
        raise ValueError(f"{host_path} is not private to host {self.name}")

    # ---- preparation ---------------------------------------------------------------------------
    def _prepare_dev(self) -> None:
        dev = self.devdir
        dev.mkdir(parents=True, exist_ok=True)
        for name in BASIC_DEVICES:
            src = Path("/dev") / name
            if not src.exists():
                continue
            st = os.stat(src)
            dst = dev / name
            dst.parent.mkdir(parents=True, exist_ok=True)
            if not dst.exists():
                os.mknod(dst, st.st_mode, st.st_rdev)
                os.chmod(dst, stat.S_IMODE(st.st_mode))
        for d in ("pts", "shm", "drbd", "mapper"):
            (dev / d).mkdir(exist_ok=True)
        for link, target in {"ptmx": "pts/ptmx", "fd": "/proc/self/fd", "stdin": "/proc/self/fd/0",
                             "stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2"}.items():
            if not (dev / link).is_symlink():
                os.symlink(target, dev / link)

    def _prepare_libvirt(self) -> None:
        etc = self.root / "libvirt" / "etc"
        if not etc.exists():
            shutil.copytree("/etc/libvirt", etc, symlinks=True)
            with open(etc / "qemu.conf", "a") as f:
                f.write(QEMU_CONF_LAB)
            # no default network autostart: domains in the lab have no NICs
            for p in (etc / "qemu" / "networks" / "autostart").glob("*"):
                p.unlink()

    def _sshd_config(self, authorized_keys: Path, host_key: Path) -> Path:
        cfg = self.root / "sshd_config"
        cfg.write_text("\n".join([
            f"ListenAddress {self.address}",
            f"Port {self.port}",
            f"HostKey {host_key}",
            f"PidFile {self.root / 'sshd.pid'}",
            f"AuthorizedKeysFile {authorized_keys}",
            "PermitRootLogin prohibit-password",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "StrictModes no",
            "PrintMotd no",
            "MaxStartups 200:30:400",
            "MaxSessions 100",
            "AcceptEnv LANG LC_*",
            "Subsystem sftp /usr/lib/openssh/sftp-server",
            f"SetEnv LAB_HOST={self.name}",
            "",
        ]))
        return cfg

    def _namespace_script(self, sshd_cfg: Path) -> str:
        lines = ["set -e",
                 f"mount --bind {self.devdir} /dev",
                 "mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts /dev/pts",
                 "mount -t tmpfs -o mode=1777 tmpfs /dev/shm"]
        for rel, target in {**HOST_PATHS, **self.extra_dirs}.items():
            if rel.startswith("libvirt") and not self.libvirt:
                continue
            lines.append(f"mount --bind {self.root / rel} {target}")
        # a hypervisor's login user has a plain shell profile: the lab machine's own ~/.bashrc
        # (Debian's bash reads it for ssh commands too) may run slow tool set-ups in every command
        # (the login user's home from passwd, where sshd's shell looks: not $HOME, which the
        # tests' environment may set elsewhere)
        import pwd
        home_rc = Path(pwd.getpwuid(os.getuid()).pw_dir) / ".bashrc"
        if home_rc.is_file():
            (self.root / "bashrc").write_text("# the simulated host's shell profile: empty\n")
            lines.append(f"mount --bind {self.root / 'bashrc'} {home_rc}")
        if self.libvirt:
            lines += [f"/usr/sbin/virtlogd -d -p {self.root / 'virtlogd.pid'}",
                      f"/usr/sbin/libvirtd -d -p {self.root / 'libvirtd.pid'}"]
        lines.append(f"exec /usr/sbin/sshd -D -e -f {sshd_cfg}")
        return "\n".join(lines)

    def start(self, authorized_keys: Path, host_key: Path) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self._prepare_dev()
        for rel, target in HOST_PATHS.items():
            if rel.startswith("libvirt") and not self.libvirt:
                continue
            if rel == "libvirt/etc":
                continue
            (self.root / rel).mkdir(parents=True, exist_ok=True)
            Path(target).mkdir(parents=True, exist_ok=True)
        if self.libvirt:
            self._prepare_libvirt()
        Path("/run/sshd").mkdir(exist_ok=True)
        cfg = self._sshd_config(authorized_keys, host_key)
        log = open(self.root / "host.log", "a")
        self.proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "--",
                                      "/bin/sh", "-c", self._namespace_script(cfg)],
                                     stdout=log, stderr=log, start_new_session=True)
        self.mnt_ns = self._own_namespace()
        self._wait_listening()
        if self.libvirt:
            self._wait_libvirt()

    def _own_namespace(self, timeout: float = 15) -> str:
        """The mount namespace `unshare` made for this host. Read once it differs from the lab's
        own: read before unshare(2) ran, it would be the lab's, and stop() would signal every
        process of the machine (an sshd already listening on the address - a host restarted -
        made that race real)."""
        ours = os.readlink("/proc/self/ns/mnt")
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                ns = os.readlink(f"/proc/{self.proc.pid}/ns/mnt")
            except OSError:
                ns = ours
            if ns != ours:
                return ns
            if self.proc.poll() is not None:
                raise RuntimeError(f"host {self.name} failed: {(self.root / 'host.log').read_text()[-2000:]}")
            time.sleep(0.01)
        raise TimeoutError(f"host {self.name}: no mount namespace of its own")

    def _wait_listening(self, timeout: float = 15) -> None:
        import socket
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"host {self.name} failed: {(self.root / 'host.log').read_text()[-2000:]}")
            try:
                with socket.create_connection((self.address, self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"sshd of {self.name} did not start")

    def _wait_libvirt(self, timeout: float = 30) -> None:
        sock = self.root / "libvirt" / "run" / "libvirt-sock"
        deadline = time.time() + timeout
        while time.time() < deadline:
            if sock.exists():
                return
            time.sleep(0.1)
        raise TimeoutError(f"libvirtd of {self.name} did not start: {(self.root / 'host.log').read_text()[-2000:]}")

    def processes(self) -> list[int]:
        """Every process living in this host's mount namespace (never the lab's own)."""
        if not self.mnt_ns or self.mnt_ns == os.readlink("/proc/self/ns/mnt"):
            return []
        pids = []
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    if os.readlink(f"/proc/{pid}/ns/mnt") == self.mnt_ns:
                        pids.append(int(pid))
                except OSError:
                    pass
        return pids

    def stop(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            pids = self.processes()
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.time() + 5
            while time.time() < deadline and self.processes():
                time.sleep(0.05)
        if self.proc:
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        self.proc = None
        self.mnt_ns = None

    def run_inside(self, command: str, check: bool = True, input: Optional[bytes] = None,
                   timeout: float = 120) -> subprocess.CompletedProcess:
        """Run a command inside this host's namespace without SSH (for test assertions)."""
        if not self.proc:
            raise RuntimeError(f"host {self.name} is not running")
        return subprocess.run(["nsenter", "-t", str(self.proc.pid), "-m", "--", "/bin/sh", "-c", command],
                              check=check, capture_output=True, input=input, timeout=timeout)


def make_keys(ssh_dir: Path) -> tuple[Path, Path]:
    """The front-end's client key and one host key shared by the simulated hosts."""
    ssh_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    client = ssh_dir / "id_ed25519"
    host_key = ssh_dir / "ssh_host_ed25519_key"
    for key in (client, host_key):
        if not key.exists():
            _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)])
    return client, host_key


def write_client_config(ssh_dir: Path, hosts: list[SimHost], client_key: Path, host_key: Path,
                        user: str = "root", packaged: bool = True, socks: Optional[Path] = None,
                        jumps: Optional[dict[str, str]] = None) -> Path:
    """oneadmin's ~/.ssh: known_hosts and config. The host blocks (HostName, Port, User,
    IdentityFile; ProxyJump for the hosts in `jumps`) live in config.d/hosts.conf, Included from
    config. `packaged`: then a `Host *` block like the one OpenNebula's packages install
    (accept-new, ServerAliveInterval 10, ControlMaster no, ControlPersist 70s, a ControlPath in
    `socks`), which OpenNebula's ssh wrapper (override_wrapper) turns into master connections."""
    pub = (host_key.with_suffix(".pub") if host_key.suffix else Path(str(host_key) + ".pub")).read_text().split()
    known = ssh_dir / "known_hosts"
    known.write_text("".join(f"[{h.address}]:{h.port},[{h.name}]:{h.port} {pub[0]} {pub[1]}\n" for h in hosts))
    included = ssh_dir / "config.d" / "hosts.conf"
    included.parent.mkdir(exist_ok=True)
    jumps = jumps or {}
    included.write_text("".join(
        f"Host {h.name}\n  HostName {h.address}\n  Port {h.port}\n  User {user}\n  IdentityFile {client_key}\n"
        f"  UserKnownHostsFile {known}\n  StrictHostKeyChecking yes\n  BatchMode yes\n"
        + (f"  ProxyJump {jumps[h.name]}\n" if h.name in jumps else "") + "\n" for h in hosts))
    config = ssh_dir / "config"
    text = f"# oneadmin's ssh configuration on the lab's front-end\nInclude {included.parent}/*.conf\n\n"
    if packaged:
        text += ("# as OpenNebula's packages install it (opennebula-common)\n"
                 "Host *\n  StrictHostKeyChecking accept-new\n  ServerAliveInterval 10\n  ControlMaster no\n"
                 f"  ControlPersist 70s\n  ControlPath {socks}/ctl-M-%C.sock\n")
    config.write_text(text)
    for f in (config, included):
        os.chmod(f, 0o600)
    return config


# The lab runs as root, whose passwd home is /root: OpenSSH reads ~/.ssh/config from the passwd
# entry, not from $HOME. This stands in for "oneadmin's home": the configuration under $HOME.
LAB_SSH = """#!/bin/sh
# the lab's ssh: oneadmin's configuration is the one under $HOME (the lab is root, home /root)
exec /usr/bin/ssh -F "$HOME/.ssh/config" "$@"
"""

# What OpenNebula's /usr/lib/one/sh/override/ssh does (share/ssh/bin/ssh in OpenNebula's source),
# written again for the lab: unless the command line sets ControlMaster already, add
# `-o ControlMaster=${SSH_OPT_CONTROL_MASTER:-auto}`.
OVERRIDE_SSH = """#!/bin/bash
# the lab's stand-in for OpenNebula's ssh wrapper (/usr/lib/one/sh/override/ssh)
for arg in "$@"; do
    case "${arg,,}" in
        -o*controlmaster*|controlmaster*) exec "{lab_ssh}" "$@" ;;
    esac
done
exec "{lab_ssh}" -o "ControlMaster=${SSH_OPT_CONTROL_MASTER:-auto}" "$@"
"""


def write_ssh_programs(bin_dir: Path, override_dir: Path) -> None:
    """<bin_dir>/ssh (the lab's OpenSSH with oneadmin's config) and <override_dir>/ssh (OpenNebula's wrapper)."""
    for d in (bin_dir, override_dir):
        d.mkdir(parents=True, exist_ok=True)
    (bin_dir / "ssh").write_text(LAB_SSH)
    (override_dir / "ssh").write_text(OVERRIDE_SSH.replace("{lab_ssh}", str(bin_dir / "ssh")))
    for f in (bin_dir / "ssh", override_dir / "ssh"):
        f.chmod(0o755)
