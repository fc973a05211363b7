"""Commands on hypervisor hosts over SSH (paramiko), the way oneadmin's ssh would reach them.

~/.ssh/config is honoured (HostName, Port, User, IdentityFile, UserKnownHostsFile,
StrictHostKeyChecking, ConnectTimeout), the ssh-agent is used when present, and host keys are
checked against known_hosts (an unknown or changed key is refused unless the config says
StrictHostKeyChecking no/accept-new). One connection per host per action carries all its
commands. Commands are argument lists, quoted here; nothing from a template reaches a shell
unquoted. A failure names the host, the step, the exit code and the remote stderr.
"""
from __future__ import annotations

import inspect
import os
import shlex
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Optional, Sequence, Union

from .errors import DriverError, HostUnreachable, HungCommand
from .report import Report, meaningful

Command = Union[Sequence[str], "Shell"]


class Shell:
    """A command line made of quoted parts joined by shell operators: Shell.join(["a", "x y"], "&&", [...])."""

    def __init__(self, text: str):
        self.text = text

    @classmethod
    def join(cls, *parts: Union[Sequence[str], str]) -> "Shell":
        out = []
        for part in parts:
            if isinstance(part, str):
                if part not in ("&&", "||", "|", ";", ">", "<", "2>/dev/null", ">/dev/null", "2>&1"):
                    raise ValueError(f"not an operator: {part}")
                out.append(part)
            else:
                out.append(quote(part))
        return cls(" ".join(out))


def quote(argv: Sequence[str]) -> str:
    return " ".join(shlex.quote(str(a)) for a in argv)


@dataclass
class Output:
    rc: int
    stdout: bytes
    stderr: bytes


def _paramiko():
    """paramiko, imported without `invoke`: paramiko loads it only to evaluate `Match exec` in
    ~/.ssh/config, and it costs ~70 ms of every action's start. A config that uses `Match exec`
    still works: _config loads invoke then (see there)."""
    if "paramiko" not in sys.modules and "invoke" not in sys.modules:
        sys.modules["invoke"] = None            # makes `import invoke` fail fast inside paramiko
        try:
            import paramiko
        finally:
            del sys.modules["invoke"]
    import paramiko
    return paramiko


def _gcm_first_transport(*args, **kwargs):
    """AES-GCM first when both ends have it: no separate MAC per packet, much faster bulk copies
    (image imports); the server still picks from the usual list when it lacks GCM."""
    paramiko = _paramiko()
    transport = paramiko.Transport(*args, **kwargs)
    opts = transport.get_security_options()
    gcm = [c for c in ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com") if c in opts.ciphers]
    opts.ciphers = tuple(gcm + [c for c in opts.ciphers if c not in gcm])
    return transport


# a command that is not a bulk copy and runs longer than this (seconds) is hung: linstor_un.conf
# SSH_COMMAND_TIMEOUT changes it
COMMAND_TIMEOUT = 300


class Host:
    def __init__(self, name: str, report: Report, timeout: float = COMMAND_TIMEOUT, connect_timeout: float = 20):
        self.steps: list[tuple[str, float]] = []       # (step, seconds) of each command: benchmarks
        self.name = name
        self.report = report
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._client = None         # paramiko.SSHClient, imported on first use (it is slow to import)

    @property
    def commands(self) -> int:
        return len(self.steps)

    @property
    def connected(self) -> bool:
        return self._client is not None

    def _config(self) -> dict:
        paramiko = _paramiko()
        path = Path(os.environ.get("HOME", "/var/lib/one")) / ".ssh" / "config"
        if not path.is_file():
            return {"hostname": self.name}
        config = paramiko.SSHConfig.from_path(str(path))
        try:
            return config.lookup(self.name)
        except ImportError:             # `Match exec` needs invoke, which _paramiko() skipped
            import invoke
            import paramiko.config
            paramiko.config.invoke = invoke
            return config.lookup(self.name)

    def connect(self):
        if self._client is not None:
            return self._client
        paramiko = _paramiko()
        cfg = self._config()
        client = paramiko.SSHClient()
        home = Path(os.environ.get("HOME", "/var/lib/one"))
        known = [os.path.expanduser(k) for k in str(cfg.get("userknownhostsfile", "")).split() if k]
        for k in known or [str(home / ".ssh" / "known_hosts")]:
            if os.path.isfile(k):
                client.load_host_keys(k)
        strict = str(cfg.get("stricthostkeychecking", "yes")).lower()
        if strict in ("no", "off"):
            client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        elif strict == "accept-new":
            client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        else:
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
        keys = [os.path.expanduser(k) for k in cfg.get("identityfile", [])]
        keys = [k for k in keys if os.path.isfile(k)]
        timeout = float(cfg.get("connecttimeout", self.connect_timeout))
        extra = {}
        if "transport_factory" in inspect.signature(client.connect).parameters:
            extra["transport_factory"] = _gcm_first_transport
        try:
            client.connect(cfg.get("hostname", self.name), port=int(cfg.get("port", 22)),
                           username=cfg.get("user") or os.environ.get("USER") or None,
                           key_filename=keys or None, timeout=timeout, banner_timeout=timeout,
                           auth_timeout=timeout, allow_agent=True, look_for_keys=not keys, **extra)
        except paramiko.BadHostKeyException:
            raise DriverError(f"{self.name}: host key does not match known_hosts; refusing to connect")
        except paramiko.SSHException as err:
            raise HostUnreachable(f"{self.name}: SSH connection failed: {err}")
        except (OSError, socket.timeout) as err:
            raise HostUnreachable(f"{self.name}: cannot connect over SSH: {err}")
        transport = client.get_transport()
        if transport is not None:
            transport.set_keepalive(15)
            # bulk copies from a host (tar streams): a wide window, fewer round trips
            transport.default_window_size = 64 * 1024 * 1024
        self._client = client
        return client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _command_line(self, command: Command) -> str:
        text = command.text if isinstance(command, Shell) else quote(command)
        return f"export LANG=C LC_ALL=C; {text}"

    def run(self, command: Command, step: str, stdin: Union[bytes, BinaryIO, None] = None,
            check: bool = True, timeout: Optional[float] = None, bulk: bool = False) -> Output:
        """Run a command; with check, a non-zero exit raises DriverError naming host and step.

        It may run `timeout` seconds (the host's command timeout by default), then it counts as
        hung: the channel is closed and the step fails. A bulk copy (bulk=True: dd, qemu-img,
        virsh save...) takes as long as the data needs."""
        import time
        limit = None if bulk else (timeout or self.timeout)
        deadline = time.monotonic() + limit if limit else None
        paramiko = _paramiko()
        try:
            client = self.connect()
        except DriverError as err:          # which step could not even start
            raise type(err)(f"{step}: {err}")
        started = time.monotonic()
        line = self._command_line(command)
        try:
            chan = client.get_transport().open_session(timeout=self.connect_timeout)
        except (paramiko.SSHException, OSError) as err:
            raise DriverError(f"{step} on {self.name}: SSH session failed: {err}")
        chan.settimeout(timeout or self.timeout)
        try:
            chan.exec_command(line)
            if stdin is not None:
                try:
                    if isinstance(stdin, bytes):
                        chan.sendall(stdin)
                    else:
                        while True:
                            block = stdin.read(1 << 20)
                            if not block:
                                break
                            chan.sendall(block)
                except (OSError, EOFError, paramiko.SSHException):
                    pass            # the command stopped reading: its exit code and stderr say why
            try:
                chan.shutdown_write()
            except (OSError, EOFError, paramiko.SSHException):
                pass
            out, err = bytearray(), bytearray()
            while True:
                if chan.recv_ready():
                    out += chan.recv(1 << 16)
                elif chan.recv_stderr_ready():
                    err += chan.recv_stderr(1 << 16)
                elif (chan.eof_received or chan.closed) and chan.exit_status_ready() \
                        and not chan.recv_ready() and not chan.recv_stderr_ready():
                    break           # EOF too: sshd may send the exit status before the last output
                else:
                    if deadline is not None and time.monotonic() > deadline:
                        raise socket.timeout()
                    import select
                    select.select([chan], [], [], 1.0 if deadline is None else
                                  max(0.01, min(1.0, deadline - time.monotonic())))
            rc = chan.recv_exit_status()
        except socket.timeout:
            chan.close()
            raise HungCommand(f"{step} on {self.name}: no answer after {limit or self.timeout:.0f}s (hung?)")
        except (paramiko.SSHException, OSError) as err:
            raise DriverError(f"{step} on {self.name}: {err}")
        finally:
            chan.close()
            self.steps.append((step, round(time.monotonic() - started, 3)))
        result = Output(rc, bytes(out), bytes(err))
        if check and rc != 0:
            msg = meaningful(result.stderr)
            raise DriverError(f"{step} on {self.name} failed (exit {rc}): {msg}")
        return result


def stream(src: Host, src_cmd: Command, dst: Host, dst_cmd: Command, step: str, timeout: float = 3600) -> None:
    """Pipe src_cmd's stdout into dst_cmd's stdin through the front-end (no host-to-host keys)."""
    import select
    import time
    paramiko = _paramiko()
    started = time.monotonic()
    try:
        a = src.connect().get_transport().open_session(timeout=src.connect_timeout)
        b = dst.connect().get_transport().open_session(timeout=dst.connect_timeout)
    except (paramiko.SSHException, OSError) as err:
        raise DriverError(f"{step}: SSH session failed: {err}")
    a.settimeout(timeout)
    b.settimeout(timeout)
    try:
        a.exec_command(src._command_line(src_cmd))
        b.exec_command(dst._command_line(dst_cmd))
        a_err, b_err = bytearray(), bytearray()
        dst_gone = False
        # until the source's EOF, not its exit status: sshd may send the exit status while
        # output is still on its way, and stopping there cut streams short
        while True:
            if a.recv_stderr_ready():
                a_err += a.recv_stderr(1 << 16)
                continue
            if a.recv_ready() or a.eof_received:
                data = a.recv(1 << 20)
                if not data:
                    break
                try:
                    b.sendall(data)
                except (OSError, paramiko.SSHException):
                    dst_gone = True      # the receiving command ended: its exit code says why
                    break
                continue
            select.select([a], [], [], 1.0)
        if dst_gone:
            a.close()                    # nobody reads the rest
        else:
            while not a.exit_status_ready():
                select.select([a], [], [], 1.0)
            while a.recv_stderr_ready():
                a_err += a.recv_stderr(1 << 16)
            b.shutdown_write()
        while not b.exit_status_ready():
            if b.recv_stderr_ready():
                b_err += b.recv_stderr(1 << 16)
            elif b.recv_ready():
                b.recv(1 << 16)
            else:
                select.select([b], [], [], 1.0)
        while b.recv_stderr_ready():
            b_err += b.recv_stderr(1 << 16)
        rc_a = a.recv_exit_status() if a.exit_status_ready() else -1
        rc_b = b.recv_exit_status()
    except (socket.timeout, paramiko.SSHException, OSError) as err:
        raise DriverError(f"{step}: {err}")
    finally:
        a.close()
        b.close()
        for host in (src, dst):             # a command on each end
            host.steps.append((step, round(time.monotonic() - started, 3)))
    if rc_a != 0 or rc_b != 0:
        msg = meaningful(bytes(b_err + b"\n" + a_err) if dst_gone else bytes(a_err + b"\n" + b_err))
        raise DriverError(f"{step} from {src.name} to {dst.name} failed (exit {rc_a}/{rc_b}): {msg}")


class Hosts:
    """One SSH connection per host for the whole action."""

    def __init__(self, report: Report, command_timeout: float = COMMAND_TIMEOUT):
        self.report = report
        self.command_timeout = command_timeout
        self._hosts: dict[str, Host] = {}

    def __getitem__(self, name: str) -> Host:
        if name not in self._hosts:
            self._hosts[name] = Host(name, self.report, timeout=self.command_timeout)
        return self._hosts[name]

    def stats(self) -> tuple[int, int]:
        """(SSH connections made, remote commands run)."""
        return (sum(h.connected for h in self._hosts.values()), sum(h.commands for h in self._hosts.values()))

    def steps(self) -> list[tuple[str, str, float]]:
        """(host, step, seconds) of every command run."""
        return [(h.name, step, secs) for h in self._hosts.values() for step, secs in h.steps]

    def close(self) -> None:
        for h in self._hosts.values():
            h.close()
