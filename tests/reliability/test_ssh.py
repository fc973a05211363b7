"""The driver's SSH to hosts fails: host unreachable, host key changed, a command failing or hanging.
Each time: a one-line error naming the host and the step, in bounded time, and the state before."""
from __future__ import annotations

import re
import subprocess
import time
from contextlib import contextmanager

from lab.lab import IMAGE_DS, SYSTEM_DS
from lab.oned import Disk

from tests.tm.conftest import PATTERN, SYS

from .conftest import NO_LEFTOVERS, leftovers, state


@contextmanager
def edited(path, change):
    text = path.read_text()
    path.write_text(change(text))
    try:
        yield
    finally:
        path.write_text(text)


def node1_block(field: str, value: str):
    """Change one field of the `Host node1` block of the ssh config."""
    def change(text):
        head, _, rest = text.partition("Host node1\n")
        block, sep, tail = rest.partition("\nHost ")
        block = re.sub(rf"(?m)^(\s*{field}\s+).*$", rf"\g<1>{value}", block)
        return head + "Host node1\n" + block + sep + tail
    return change


def clone_fails(env, sc, vm, img, expect: list[str], bound: float):
    sc.run()
    env.vm(vm, [Disk(0, IMAGE_DS, image_id=img.id, source=img.source, size=32)])
    before = state(env)
    start = time.monotonic()
    result = env.clone(img, vm, 0)
    took = time.monotonic() - start
    assert result.rc != 0, str(result)
    lines = [ln for ln in result.stderr.strip().splitlines() if not ln.startswith("INFO")]   # logs
    assert len(lines) == 1, result.stderr
    for text in expect:
        assert text in lines[0], lines[0]
    assert took < bound, f"{took:.1f}s"
    assert state(env) == before
    assert leftovers(env) == NO_LEFTOVERS


def test_ssh_failures_are_clear_bounded_and_rolled_back(renv, scenario):
    env = renv
    sc = scenario("SSH: host unreachable (refused, no route), host key changed, command failing, command hanging",
                  "one-line error naming the host and the step; < 30 s; LINSTOR and hosts as before")
    img = env.image(300, data=PATTERN, nodes=["node2", "node3"])
    # a placement LINSTOR's own clone would not give (the VM disk on node1, the image on node2 and
    # node3): the copy runs on the host
    env.lab.oned.datastores[SYSTEM_DS].template.update(NODE_LIST="node1")
    # as on a host that ran VMs before: the system datastore's directory exists (a hung link may
    # have made the VM directory in it, which is taken back; the datastore directory is not ours)
    env.lab.host("node1").run_inside(f"mkdir -p {SYS}")
    config = env.lab.home / ".ssh" / "config.d" / "hosts.conf"     # the host blocks (Included)
    known = env.lab.home / ".ssh" / "known_hosts"

    with socket_free_port() as port, edited(config, node1_block("Port", str(port))):
        clone_fails(env, sc, 301, img, ["node1", "SSH", "copy"], 15)
    with edited(config, lambda t: node1_block("HostName", "10.255.255.1")(t).replace(
            "Host node1\n", "Host node1\n  ConnectTimeout 3\n", 1)):
        clone_fails(env, sc, 302, img, ["node1"], 15)

    other = env.lab.workdir / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    forged = other.with_suffix(".pub").read_text().split()[:2]
    address = re.search(r"(?m)^Host node1\n(?:\s+.*\n)*?\s+HostName\s+(\S+)", config.read_text()).group(1)

    def forge(text):
        return "\n".join(f"{ln.split()[0]} {' '.join(forged)}" if ln.startswith((f"[{address}]", address)) else ln
                         for ln in text.splitlines()) + "\n"
    env.lab.close_masters()         # a host whose key changed was reinstalled: its connections are gone
    with edited(known, forge):
        clone_fails(env, sc, 303, img, ["node1", "host key does not match known_hosts"], 15)

    env.lab.fail_command("node1", "dd")
    try:
        clone_fails(env, sc, 304, img, ["node1", "copy", "injected failure: dd"], 30)
    finally:
        env.lab.clear_command_faults()

    conf = env.lab.one_location / "var" / "remotes" / "etc" / "datastore" / "linstor_un" / "linstor_un.conf"
    shim = env.lab.host("node1").path("/usr/local/bin") / "ln"
    shim.write_text("#!/bin/sh\nexec sleep 3600\n")
    shim.chmod(0o755)
    try:
        with edited(conf, lambda t: t + "\nSSH_COMMAND_TIMEOUT=3\n"):
            clone_fails(env, sc, 305, img, ["node1", "link", "no answer after 3s"], 30)
        # the hung command did not outlive the action on the host
        left = env.lab.host("node1").run_inside("pgrep -f '[s]leep 3600' || true").stdout.strip()
        assert left == b"", left
    finally:
        shim.unlink()
        env.lab.host("node1").run_inside("pkill -f 'sleep 3600'", check=False)


@contextmanager
def socket_free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    yield port
