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
