"""oned's API misbehaving: an endpoint that trickles its answer a byte every second."""
from __future__ import annotations

import socket
import threading
import time

from lab.lab import IMAGE_DS
from lab.oned import Disk

from tests.tm.conftest import PATTERN, Env, disk_path


def trickling_oned(stop: threading.Event) -> str:
    """Accepts every connection and answers HTTP 200 a byte per second, for ever."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def serve(conn):
        with conn:
            for byte in b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: 100000\r\n\r\n<?xml " * 100:
                if stop.wait(1):
                    return
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    return

    def accept():
        listener.settimeout(0.5)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            threading.Thread(target=serve, args=(conn,), daemon=True).start()
        listener.close()
    threading.Thread(target=accept, daemon=True).start()
    return f"http://127.0.0.1:{listener.getsockname()[1]}/RPC2"


def test_a_trickling_oned_cannot_hold_an_action(lab, scenario):
    sc = scenario("oned answers a byte at a time (each read well inside its timeout)",
                  "the action fails at ONED_DEADLINE (linstor_un.conf) with one line naming oned and the call; "
                  "nothing changed in LINSTOR")
    env = Env(lab)
    img = env.image(90, data=PATTERN)
    env.vm(90, [Disk(0, IMAGE_DS, image_id=90, source=img.source, size=32)])
    assert env.clone(img, 90, 0).ok
    conf = lab.one_location / "var" / "remotes" / "etc" / "datastore" / "linstor_un" / "linstor_un.conf"
    saved = conf.read_text()
    stop = threading.Event()
    try:
        conf.write_text(saved + "ONED_DEADLINE=3\n")
        runner = lab.runner()
        runner.env["ONE_XMLRPC"] = trickling_oned(stop)
        before = env.rds()
        sc.run()
        started = time.monotonic()
        result = runner.tm("snap_create", f"node1:{disk_path(90, 0)}", 0, 90, IMAGE_DS)
        took = time.monotonic() - started
        assert not result.ok and result.stdout == ""
        assert "gave no complete answer to one.vm.info within 3s" in result.stderr.strip().splitlines()[-1]
        assert took < 10, took
        assert env.rds() == before
    finally:
        stop.set()
        conf.write_text(saved)
