"""Commands on hypervisor hosts through the OpenSSH client: exactly where, and how, oneadmin's own
`ssh` goes.

The `ssh` is the one on PATH, as oned's environment has it (on a packaged front-end OpenNebula's
wrapper in /usr/lib/one/sh/override), so ~/.ssh/config applies whole: Include, Match, ProxyJump,
ProxyCommand, certificates, agents, GSSAPI, host key checking as configured. Where the
configuration names a ControlPath (the packaged one does: /run/one/ssh-socks/ctl-M-%C.sock with
ControlPersist), every command rides the host's master connection, the one OpenNebula's own
drivers share, and makes it with `ControlMaster=auto` when there is none yet, as OpenNebula's
wrapper does (SSH_OPT_CONTROL_MASTER overrides it the same way). Where it names none, the action
makes a private master for itself: one connection per host per action, closed at its end.

Commands are argument lists, quoted here; nothing from a template reaches a shell unquoted. On
the host each command runs under `timeout` (SSH_COMMAND_TIMEOUT for commands that are not bulk
copies) in its own process group, and a command that reads no input is watched through the
channel: when the driver is gone (killed, timed out, SIGTERM) the channel's input ends and the
command's whole process group is killed, so nothing of an action outlives it on a host. A
failure names the host, the step, the exit code and the meaningful stderr lines.
"""
from __future__ import annotations

import os
import selectors
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass
from typing import BinaryIO, Optional, Protocol, Sequence, Union

from .errors import DriverError, HostUnreachable, HungCommand
from .report import Report, meaningful

class Readable(Protocol):
    """What a command's input may be read from: a file, a download, an image source, a chain."""

    def read(self, n: int = -1) -> bytes: ...


Command = Union[Sequence[str], "Shell"]
Input = Union[bytes, BinaryIO, Readable, None]


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


# a command that is not a bulk copy and runs longer than this (seconds) is hung: linstor_un.conf
# SSH_COMMAND_TIMEOUT changes it
COMMAND_TIMEOUT = 300
KILL_AFTER = 5            # seconds from a command's TERM to its KILL on the host
TRANSPORT_GRACE = 15      # the driver's own clock waits this much longer than the host's `timeout`
PRIVATE_PERSIST = 30      # an action's private master outlives a SIGKILLed action by this (seconds)
SSH_FAILED = 255          # ssh's own exit code (connection, authentication, host key)
CHUNK = 4 << 20
# the first line each remote command writes to stderr: a 255 without it is ssh's own failure
STARTED = b"linstor_un: started\n"
_STARTED_SH = "printf 'linstor_un: started\\n' >&2"


def remote_line(command: Command, limit: float, watched: bool) -> str:
    """The line the host's login shell runs: C locale, the command under `timeout` (0 = no limit;
    either way it gets its own process group that a TERM reaches whole), and, when the command
    reads no input, a watcher on the channel's input that TERMs that group when the input ends."""
    if isinstance(command, Shell):
        body = ["sh", "-c", command.text]
    else:
        body = list(command)
    run = quote(["timeout", "-k", str(KILL_AFTER), f"{max(0, int(limit + 0.999))}", *body])
    head = f"{_STARTED_SH}; export LANG=C LC_ALL=C; "
    if not watched:
        return head + "exec " + run
    return (head + "exec 3<&0 </dev/null; " + run + " 3<&- & c=$!; "
            "{ while read -r _ <&3; do :; done; kill -TERM $c; } >/dev/null 2>&1 & w=$!; "
            "wait $c; rc=$?; kill $w 2>/dev/null; exit $rc")


def ssh_program() -> str:
    found = shutil.which("ssh", path=os.environ.get("PATH", os.defpath))
    if not found:
        raise DriverError("no ssh client on PATH (openssh-client)")
    return found


@dataclass
class HostConfig:
    """What `ssh -G <host>` says the configuration is for one host (keys in lower case)."""
    options: dict[str, str]

    @classmethod
    def of(cls, ssh: str, name: str) -> "HostConfig":
        try:        # (a `Match exec` command may hang)
            done = subprocess.run([ssh, "-G", "--", name], stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
        except subprocess.TimeoutExpired:
            raise DriverError(f"{name}: reading the ssh configuration (ssh -G) took over 30 s")
        if done.returncode != 0:
            raise DriverError(f"{name}: the ssh configuration cannot be read: {meaningful(done.stderr)}")
        options: dict[str, str] = {}
        for line in done.stdout.decode(errors="replace").splitlines():
            key, _, value = line.partition(" ")
            options.setdefault(key.lower(), value.strip())
        return cls(options)

    def set(self, key: str) -> bool:
        return self.options.get(key, "none") not in ("", "none", "0")

    @property
    def shared_master(self) -> bool:
        return self.set("controlpath")


@dataclass
class Masters:
    """The action's private ControlPath directory, for hosts whose configuration names none."""
    directory: Optional[str] = None

    def path(self) -> str:
        if self.directory is None:
            import tempfile             # (only front-ends without a ControlPath need it)
            self.directory = tempfile.mkdtemp(prefix="lsu-ssh-")
        return os.path.join(self.directory, "%C")


# ssh's words for a server that closed the connection before the first exchange
TRANSIENT = ("kex_exchange_identification", "Connection closed by", "Connection reset by",
             "ssh_exchange_identification")


def _ssh_failure(name: str, stderr: bytes) -> DriverError:
    text = stderr.decode(errors="replace")
    if "IDENTIFICATION HAS CHANGED" in text or "has changed and you have requested strict" in text:
        return DriverError(f"{name}: host key does not match known_hosts; refusing to connect")
    if "Host key verification failed" in text:
        return DriverError(f"{name}: host key not in known_hosts (StrictHostKeyChecking); refusing to connect")
    said = b"\n".join(ln for ln in stderr.splitlines() if not ln.startswith(b"Warning: Permanently added"))
    return HostUnreachable(f"{name}: cannot connect over SSH: {meaningful(said)}")


def _started(stderr: bytearray) -> tuple[bool, bytes]:
    if stderr.startswith(STARTED):
        return True, bytes(stderr[len(STARTED):])
    at = stderr.find(b"\n" + STARTED)     # ssh's own warnings come first
    if at >= 0:
        return True, bytes(stderr[:at + 1] + stderr[at + 1 + len(STARTED):])
    return False, bytes(stderr)


class Host:
    def __init__(self, name: str, report: Report, timeout: float = COMMAND_TIMEOUT, connect_timeout: float = 20,
                 masters: Optional[Masters] = None):
        self.steps: list[tuple[str, float]] = []       # (step, seconds) of each command: benchmarks
        self.name = name
        self.report = report
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.masters = masters if masters is not None else Masters()
        self._argv: Optional[list[str]] = None
        self._private = False

    @property
    def commands(self) -> int:
        return len(self.steps)

    @property
    def connected(self) -> bool:
        return self._argv is not None

    def argv(self) -> list[str]:
        """`ssh <options> -- <host>`: the configuration's own, plus what a driver needs (no prompts;
        a master to share; a connect timeout and keepalives only where the configuration sets none)."""
        if self._argv is not None:
            return self._argv
        ssh = ssh_program()
        config = HostConfig.of(ssh, self.name)
        argv = [ssh, "-o", "BatchMode=yes"]
        if config.shared_master:
            argv += ["-o", f"ControlMaster={os.environ.get('SSH_OPT_CONTROL_MASTER') or 'auto'}"]
        else:
            argv += ["-o", "ControlMaster=auto", "-o", f"ControlPath={self.masters.path()}",
                     "-o", f"ControlPersist={PRIVATE_PERSIST}"]
            self._private = True
        if not config.set("connecttimeout"):
            argv += ["-o", f"ConnectTimeout={int(self.connect_timeout)}"]
        if not config.set("serveraliveinterval"):
            argv += ["-o", "ServerAliveInterval=15"]
        self._argv = argv + ["--", self.name]
        return self._argv

    def spawn(self, command: Command, step: str, limit: float, watched: bool, stdout=subprocess.PIPE,
              stdin=subprocess.PIPE) -> subprocess.Popen:
        try:
            argv = self.argv()
        except DriverError as err:
            raise type(err)(f"{step}: {err}")
        return subprocess.Popen(argv + [remote_line(command, limit, watched)], stdin=stdin, stdout=stdout,
                                stderr=subprocess.PIPE)

    def close(self) -> None:
        """Ends the action's private master (a shared one is OpenNebula's: it stays)."""
        if self._private and self._argv is not None:
            subprocess.run(self._argv[:-2] + ["-O", "exit", "--", self.name], stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=10)
        self._argv = None
        self._private = False

    def said(self, step: str, rc: int, stderr: bytearray) -> bytes:
        """A finished command's stderr without the marker; ssh's own failure (255 before the
        command started) raised as the connection error it is."""
        started, text = _started(stderr)
        if rc == SSH_FAILED and not started:
            err = _ssh_failure(self.name, text)
            raise type(err)(f"{step}: {err}")
        return text

    def run(self, command: Command, step: str, stdin: Input = None,
            check: bool = True, timeout: Optional[float] = None, bulk: bool = False,
            stdout: Optional[BinaryIO] = None) -> Output:
        """Run a command; with check, a non-zero exit raises DriverError naming host and step.

        It may run `timeout` seconds (the host's command timeout by default), then it counts as
        hung: the host kills it and the step fails. A bulk copy (bulk=True: dd, qemu-img, virsh
        save...) takes as long as the data needs. `stdout`: a file the output goes into instead
        (what grows with a disk's size is not held in memory)."""
        try:
            return self._run(command, step, stdin, check, timeout, bulk, stdout)
        except HostUnreachable as err:
            # the server closed the connection before the first exchange (a master connection
            # going away under a new client, an sshd at its start-up limit): nothing ran there, and
            # an input given as bytes can be sent again - once
            if not any(sign in str(err) for sign in TRANSIENT) or not isinstance(stdin, (bytes, type(None))):
                raise
            self.report.info(f"{err}; connecting again")
            time.sleep(1)
            return self._run(command, step, stdin, check, timeout, bulk, stdout)

    def _run(self, command: Command, step: str, stdin: Input, check: bool, timeout: Optional[float],
             bulk: bool, stdout: Optional[BinaryIO]) -> Output:
        limit = 0.0 if bulk else float(timeout or self.timeout)
        started = time.monotonic()
        proc = self.spawn(command, step, limit, watched=stdin is None,
                          stdout=stdout if stdout is not None else subprocess.PIPE)
        feed = _Feed(stdin)
        try:
            [(out, err)] = _exchange([(proc, feed)], started + limit + TRANSPORT_GRACE if limit else None)
            rc = proc.wait()
        except _Expired:
            rc = None
        finally:
            _finish(proc)
            self.steps.append((step, round(time.monotonic() - started, 3)))
        took = time.monotonic() - started
        if rc is None or (limit and rc in (124, 137) and took >= limit - 0.5):
            raise HungCommand(f"{step} on {self.name}: no answer after {limit:.0f}s (hung?)")
        said = self.said(step, rc, err)
        if isinstance(feed.error, DriverError):
            raise feed.error
        if feed.error is not None:
            raise DriverError(f"{step} on {self.name}: reading its input failed: {feed.error}")
        result = Output(rc, bytes(out), said)
        if check and rc != 0:
            raise DriverError(f"{step} on {self.name} failed (exit {rc}): {meaningful(result.stderr)}")
        return result


class _Expired(Exception):
    pass


@dataclass
class _Feed:
    """What goes into a command's stdin: bytes, or a readable stream (read in chunks; the rest of a
    plain local file sent by the kernel when the stream offers its descriptor: `passthrough()`)."""
    source: Input
    error: Optional[BaseException] = None

    def write_to(self, fd: int) -> None:
        source = self.source
        if source is None:
            return
        if isinstance(source, (bytes, bytearray)):
            _write_fully(fd, memoryview(source))
            return
        offer = getattr(source, "passthrough", lambda: None)
        while True:
            direct = offer()
            if direct is not None:          # kernel to kernel
                while os.sendfile(fd, direct, None, CHUNK):
                    pass
                return
            try:
                chunk = source.read(CHUNK)
            except Exception as error:      # the source failed (a download cut off...)
                self.error = error
                return
            if not chunk:
                return
            _write_fully(fd, memoryview(chunk))


def _write_fully(fd: int, view: memoryview) -> None:
    while view:
        view = view[os.write(fd, view):]


def _exchange(procs: list[tuple[subprocess.Popen, _Feed]], deadline: Optional[float]) -> list[tuple[bytearray, bytearray]]:
    """Feed each command's stdin (where there is input: a thread each, blocking writes of whole
    chunks into a widened pipe) while collecting stdouts and stderrs, until all of them end. With
    no input, a stdin stays open until then: its end is what tells the host the driver is gone."""
    import threading
    sel = selectors.DefaultSelector()
    results, writers = [], []
    for proc, feed in procs:
        out, err = bytearray(), bytearray()
        results.append((out, err))
        if proc.stdout is not None:
            sel.register(proc.stdout, selectors.EVENT_READ, out)
        if proc.stderr is not None:         # (always a pipe: spawn makes it one)
            sel.register(proc.stderr, selectors.EVENT_READ, err)
        if feed.source is not None and proc.stdin is not None:
            _widen(proc.stdin.fileno())
            writers.append(threading.Thread(target=_write_all, args=(proc.stdin, feed), daemon=True))
            writers[-1].start()
    try:
        while sel.get_map():
            wait = None if deadline is None else deadline - time.monotonic()
            if wait is not None and wait <= 0:
                raise _Expired()
            for key, _ in sel.select(wait):
                block = os.read(key.fd, 1 << 16)
                if block:
                    key.data.extend(block)
                else:
                    sel.unregister(key.fileobj)
    except BaseException:               # timed out, SIGTERM...: a writer may be blocked on a command
        for proc, _ in procs:           # that reads no more; with the local ssh gone it is not
            if proc.poll() is None:
                proc.kill()
        raise
    finally:
        sel.close()
        for w in writers:
            w.join()
    return results


def _write_all(pipe, feed: _Feed) -> None:
    try:
        feed.write_to(pipe.fileno())
    except OSError:                         # the command stopped reading: its exit code and stderr say why
        pass
    finally:
        try:
            pipe.close()
        except OSError:
            pass


def _widen(fd: int) -> None:
    """A 1 MiB pipe instead of 64 KiB: fewer wake-ups per GiB between the driver and ssh."""
    try:
        import fcntl
        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), 1 << 20)
    except OSError:
        pass


def _finish(proc: subprocess.Popen) -> None:
    """The local ssh gone, whatever happened: closing its input ends a watched command on the host."""
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            try:
                pipe.close()
            except OSError:
                pass
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def stream(src: Host, src_cmd: Command, dst: Host, dst_cmd: Command, step: str, timeout: float = 3600) -> None:
    """Pipe src_cmd's stdout into dst_cmd's stdin through the front-end (no host-to-host keys):
    the two ssh clients share one pipe, the bytes never pass through Python."""
    started = time.monotonic()
    a = src.spawn(src_cmd, step, 0, watched=True)
    try:
        b = dst.spawn(dst_cmd, step, 0, watched=False, stdin=a.stdout)
    except BaseException:
        _finish(a)
        raise
    if a.stdout is not None:
        a.stdout.close()
    a.stdout = None
    deadline = started + timeout
    try:
        [(_, a_err), (_, b_err)] = _exchange([(a, _Feed(None)), (b, _Feed(None))], deadline)
        rc_a, rc_b = a.wait(), b.wait()
    except _Expired:
        raise DriverError(f"{step} from {src.name} to {dst.name}: not done after {timeout:.0f}s")
    finally:
        _finish(a)
        _finish(b)
        for host in (src, dst):             # a command on each end
            host.steps.append((step, round(time.monotonic() - started, 3)))
    a_text, b_text = src.said(step, rc_a, a_err), dst.said(step, rc_b, b_err)
    if rc_a != 0 or rc_b != 0:
        msg = meaningful(b_text + b"\n" + a_text if rc_b != 0 else a_text + b"\n" + b_text)
        raise DriverError(f"{step} from {src.name} to {dst.name} failed (exit {rc_a}/{rc_b}): {msg}")


class Hosts:
    """The hosts one action talks to: one master connection each (OpenNebula's or the action's own)."""

    def __init__(self, report: Report, command_timeout: float = COMMAND_TIMEOUT):
        self.report = report
        self.command_timeout = command_timeout
        self.masters = Masters()
        self._hosts: dict[str, Host] = {}

    def __getitem__(self, name: str) -> Host:
        if name not in self._hosts:
            self._hosts[name] = Host(name, self.report, timeout=self.command_timeout, masters=self.masters)
        return self._hosts[name]

    def stats(self) -> tuple[int, int]:
        """(hosts reached over SSH, remote commands run)."""
        return (sum(h.connected for h in self._hosts.values()), sum(h.commands for h in self._hosts.values()))

    def steps(self) -> list[tuple[str, str, float]]:
        """(host, step, seconds) of every command run."""
        return [(h.name, step, secs) for h in self._hosts.values() for step, secs in h.steps]

    def close(self) -> None:
        for h in self._hosts.values():
            try:
                h.close()
            except (OSError, subprocess.SubprocessError):
                pass
        if self.masters.directory is not None:
            shutil.rmtree(self.masters.directory, ignore_errors=True)
            self.masters.directory = None
