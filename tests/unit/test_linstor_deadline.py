"""Every LINSTOR request has an overall deadline, not only python-linstor's per-read timeout."""
import io
import time

import pytest

from linstor_un.errors import DriverError
from linstor_un.linstor_api import Linstor
from linstor_un.report import Report
from linstor_un.settings import Connection


def api(timeout: float) -> Linstor:
    a = Linstor(Connection(["linstor://127.0.0.1:1"]), Report("test", (7, 0, 0), stream=io.StringIO()),
                timeout=timeout)
    a._client = object()              # a connected client whose request never completes (below)
    return a


def test_a_request_that_never_completes_fails_at_the_deadline():
    a = api(1)
    started = time.monotonic()
    with pytest.raises(DriverError, match="list things: no complete answer from LINSTOR within 1s"):
        a._call("list things", lambda c: time.sleep(30))
    assert time.monotonic() - started < 3
    assert a._client is None          # the stuck connection is not used again


def test_answers_and_errors_pass_through():
    a = api(5)
    assert a._call("x", lambda c: 42) == 42
    with pytest.raises(DriverError, match="x: .*boom"):
        def fail(c):
            import linstor
            raise linstor.LinstorError("boom")
        a._call("x", fail)


def test_connecting_to_a_controller_that_trickles_fails_at_the_deadline():
    """python-linstor's connect (https probe, version request) reads with a per-read timeout
    only: a controller answering a byte a second would hold the action for ever."""
    import socket
    import threading
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    port = server.getsockname()[1]
    stop = threading.Event()

    def trickle(conn):
        with conn:
            conn.recv(65536)
            for byte in b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 999999\r\n\r\n{" * 100:
                if stop.is_set():
                    return
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    return
                time.sleep(0.3)

    def serve():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            threading.Thread(target=trickle, args=(conn,), daemon=True).start()
    threading.Thread(target=serve, daemon=True).start()
    a = Linstor(Connection([f"linstor://127.0.0.1:{port}"]), Report("test", (7, 0, 0), stream=io.StringIO()),
                timeout=5, connect_timeout=1)
    started = time.monotonic()
    try:
        with pytest.raises(DriverError, match="cannot reach any LINSTOR controller .*no complete answer within 3s"):
            a.resource_definitions()
        assert time.monotonic() - started < 6
    finally:
        stop.set()
        server.close()
