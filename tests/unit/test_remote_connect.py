"""A host command whose SSH connection the server closes before the first exchange (a master
connection going away under a new client, an sshd at its start-up limit) is tried once more:
nothing ran there. Other connection failures are not (a host that is down is down)."""
import io
import os
import stat

import pytest

from linstor_un.errors import HostUnreachable
from linstor_un.remote import Host
from linstor_un.report import Report

FAKE_SSH = """#!/bin/bash
# a stand-in of the OpenSSH client: `-G` answers a configuration, `-O` a master command; a command
# fails as $FAKE_SSH_FAILURE the first $FAKE_SSH_FAILS times, then runs here
for a in "$@"; do [ "$a" = -G ] && { echo "hostname $FAKE_HOST"; echo "controlpath none"; exit 0; }; done
for a in "$@"; do [ "$a" = -O ] && exit 0; done
n=$(cat "$FAKE_SSH_STATE" 2>/dev/null || echo 0); echo $((n + 1)) > "$FAKE_SSH_STATE"
if [ "$n" -lt "$FAKE_SSH_FAILS" ]; then echo "$FAKE_SSH_FAILURE" >&2; exit 255; fi
exec bash -c "${@: -1}"
"""


@pytest.fixture
def fake_ssh(tmp_path, monkeypatch):
    ssh = tmp_path / "bin" / "ssh"
    ssh.parent.mkdir()
    ssh.write_text(FAKE_SSH)
    ssh.chmod(ssh.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{ssh.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SSH_STATE", str(tmp_path / "count"))
    monkeypatch.setenv("FAKE_HOST", "node1")
    return tmp_path / "count"


def host() -> Host:
    return Host("node1", Report("test", (7, 0, 0), stream=io.StringIO()))


def test_a_connection_closed_before_the_first_exchange_is_tried_again(fake_ssh, monkeypatch):
    monkeypatch.setenv("FAKE_SSH_FAILS", "1")
    monkeypatch.setenv("FAKE_SSH_FAILURE", "kex_exchange_identification: Connection closed by remote host")
    out = host().run(["echo", "ran"], "probe", stdin=b"")
    assert out.stdout == b"ran\n" and fake_ssh.read_text().strip() == "2"


def test_twice_is_an_error_and_a_refused_connection_is_not_tried_again(fake_ssh, monkeypatch):
    monkeypatch.setenv("FAKE_SSH_FAILS", "5")
    monkeypatch.setenv("FAKE_SSH_FAILURE", "kex_exchange_identification: Connection closed by remote host")
    with pytest.raises(HostUnreachable, match="probe: node1: cannot connect over SSH"):
        host().run(["echo", "ran"], "probe")
    assert fake_ssh.read_text().strip() == "2"
    fake_ssh.unlink()
    monkeypatch.setenv("FAKE_SSH_FAILURE", "ssh: connect to host node1 port 22: Connection refused")
    with pytest.raises(HostUnreachable, match="Connection refused"):
        host().run(["echo", "ran"], "probe")
    assert fake_ssh.read_text().strip() == "1"
