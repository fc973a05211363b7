"""The unit tier's LINSTOR: the lab's emulated controller served from a thread of the test process
(no root, no hosts, no subprocess: the data plane is files), and the driver's own client on it."""
from __future__ import annotations

import io
import threading

import pytest

from lab.linstor_emu.process import free_port
from lab.linstor_emu.server import Emulator
from linstor_un.linstor_api import Linstor
from linstor_un.report import Report
from linstor_un.settings import Connection

NODES = [{"name": f"node{i}", "address": f"127.0.0.{10 + i}",
          "pools": [{"name": "data", "provider_kind": "LVM_THIN", "total_kib": (10 + i) << 20},
                    {"name": "thick", "provider_kind": "LVM", "total_kib": 1 << 20}]} for i in (1, 2, 3)]
GROUPS = [{"name": "one_rg", "select_filter": {"place_count": 2, "storage_pool_list": ["data"]}},
          {"name": "bare_rg", "select_filter": {}}]


@pytest.fixture(scope="module")
def controller(tmp_path_factory):
    """The emulator of one module's tests (each test names its own resources); `controller.faults`
    makes the next matching requests fail as the lab's faults do."""
    port = free_port()
    emu = Emulator({"state_dir": str(tmp_path_factory.mktemp("linstor")), "nodes": NODES, "resource_groups": GROUPS,
                    "http_port": port, "validate_schema": False, "version": "1.33.2"})
    thread = threading.Thread(target=emu.serve, daemon=True)
    thread.start()
    while not emu.servers:
        pass
    emu.url = f"linstor://127.0.0.1:{port}"
    yield emu
    for server in emu.servers:
        server.shutdown()


@pytest.fixture(scope="module")
def api(controller):
    """The driver's LINSTOR session on it; its report writes into `api.report.stream` (a StringIO)."""
    api = Linstor(Connection([controller.url]), Report("test", (7, 0, 0), stream=io.StringIO()))
    yield api
    api.close()
