"""Shared fixtures: the emulated controller alone, and the whole lab."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "lib"))

from lab.lab import Lab, LabConfig  # noqa: E402
from lab.linstor_emu.process import EmulatorConfig, LinstorEmulator  # noqa: E402

THREE_NODES = [
    {"name": f"node{i}", "address": f"127.0.0.{10 + i}", "props": {"Aux/rack": "r1" if i < 3 else "r2",
                                                                   "Aux/zone": f"z{i}"},
     "pools": [{"name": "data", "provider_kind": "LVM_THIN", "total_kib": 10 * 1024 * 1024},
               {"name": "thick", "provider_kind": "LVM", "total_kib": 1024 * 1024}]}
    for i in (1, 2, 3)
]


def assert_schema_clean(emulator: LinstorEmulator) -> None:
    problems = emulator.violations()
    assert problems == [], "responses that do not match LINSTOR's OpenAPI document:\n" + "\n".join(
        p["problem"] for p in problems)


@pytest.fixture
def emulator(tmp_path):
    """The emulated controller with three nodes and no hosts (data plane: files only)."""
    emu = LinstorEmulator(EmulatorConfig(
        state_dir=tmp_path / "linstor", nodes=THREE_NODES,
        resource_groups=[{"name": "one_rg", "select_filter": {"place_count": 2, "storage_pool_list": ["data"]}}]))
    emu.start()
    yield emu
    try:
        assert_schema_clean(emu)
    finally:
        emu.shutdown()


@pytest.fixture
def client(emulator):
    import linstor
    with linstor.MultiLinstor([emulator.url]) as c:
        yield c


@pytest.fixture
def lab():
    with Lab(LabConfig(hosts=3)) as lab:
        yield lab
        assert_schema_clean(lab.linstor)


@pytest.fixture(scope="module")
def libvirt_lab():
    with Lab(LabConfig(hosts=2, libvirt=True)) as lab:
        yield lab


def pytest_collection_modifyitems(session, config, items):
    """The unit tier (tests/unit: no root, no lab, seconds) runs first: a broken rule shows at once."""
    unit = REPO / "tests" / "unit"
    items.sort(key=lambda item: 0 if Path(str(item.fspath)).is_relative_to(unit) else 1)
