"""oned's API: an overall deadline per call, not only per read (no lab needed)."""
import socket
import threading
import time

import pytest

from linstor_un.errors import DriverError
from linstor_un.one_api import OneApi

ANSWER = (b"<?xml version='1.0'?><methodResponse><params><param><value><array><data>"
          b"<value><boolean>1</boolean></value><value><string>&lt;VM&gt;&lt;ID&gt;7&lt;/ID&gt;&lt;/VM&gt;"
          b"</string></value></data></array></value></param></params></methodResponse>")


def server(trickle: float, answer: bytes = ANSWER, status: bytes = b"200 OK"):
    """An oned that answers `answer` (correctly, by default), `trickle` seconds per byte."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    stop = threading.Event()

    def serve():
        conn, _ = listener.accept()
        with conn:
            request = b""
            while b"\r\n\r\n" not in request:            # the whole request, body too: closing on
                request += conn.recv(65536)                  # unread bytes would reset the connection
            head, _, body = request.partition(b"\r\n\r\n")
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length")))
            while len(body) < length:
                body += conn.recv(65536)
            reply = b"HTTP/1.1 %s\r\nContent-Type: text/xml\r\nContent-Length: %d\r\n\r\n" % (status, len(answer)) + answer
            step = 1 if trickle else 1 << 16
            for i in range(0, len(reply), step):
                if stop.is_set():
                    return
                try:
                    conn.sendall(reply[i:i + step])
                except OSError:
                    return
                time.sleep(trickle)
    threading.Thread(target=serve, daemon=True).start()
    return f"http://127.0.0.1:{listener.getsockname()[1]}/RPC2", stop


def test_a_trickling_oned_cannot_hold_an_action():
    url, stop = server(0.5)                       # every byte well inside the per-read timeout
    api = OneApi(url, auth="oneadmin:x", timeout=5, deadline=2)
    started = time.monotonic()
    with pytest.raises(DriverError, match="no complete answer to one.vm.info within 2s"):
        api.vm(7)
    assert time.monotonic() - started < 4
    stop.set()


def test_a_prompt_oned_answers():
    url, _ = server(0)
    assert OneApi(url, auth="oneadmin:x", timeout=5, deadline=5).vm(7).id == 7


FAULT = (b"<?xml version='1.0'?><methodResponse><fault><value><struct><member><name>faultCode</name><value>"
         b"<int>1</int></value></member><member><name>faultString</name><value><string>no such method</string>"
         b"</value></member></struct></value></fault></methodResponse>")
HUGE = (b"<?xml version='1.0'?><methodResponse><params><param><value><array><data>"
        b"<value><boolean>1</boolean></value><value><string>&lt;VM&gt;&lt;ID&gt;7&lt;/ID&gt;&lt;T&gt;"
        + b"x" * (11 << 20) + b"&lt;/T&gt;&lt;/VM&gt;</string></value></data></array></value></param></params>"
        b"</methodResponse>")


@pytest.mark.parametrize("answer,status,says", [
    (b"<html>not xml-rpc", b"200 OK", "answered one.vm.info with something that is not an XML-RPC reply"),
    (FAULT, b"200 OK", "answered one.vm.info with a fault: no such method"),
    (b"busy", b"503 Service Unavailable", "answered one.vm.info with HTTP 503"),
    (ANSWER.replace(b"<boolean>1</boolean></value><value>", b""), b"200 OK", "unexpected reply"),
])
def test_what_oned_answers_wrongly_is_said_as_such(answer, status, says):
    url, _ = server(0, answer, status)
    with pytest.raises(DriverError, match=says) as err:
        OneApi(url, auth="oneadmin:x", timeout=5, deadline=5).vm(7)
    assert "cannot reach" not in str(err.value)


def test_a_large_document_is_read():
    url, _ = server(0, HUGE)
    assert OneApi(url, auth="oneadmin:x", timeout=5, deadline=20).vm(7).id == 7
