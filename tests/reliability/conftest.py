"""The reliability suite's bench and its ledger.

Each test names its scenario and what it checks, and counts its runs (one run = one action, or
one workload, whose outcome and leftovers were checked). When the test ends, its runs are booked
as passed (the test passed) or as all-but-the-failing-one; the session writes the figures to
tests/reliability/results.json, from which `python -m tests.reliability.report` renders the table
of docs/reliability.md. A figure in that table exists only if a run of this suite produced it.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from lab.lab import IMAGE_DS, SYSTEM_DS, Lab, LabConfig

from tests.tm.conftest import Env
from tests.tm.test_faults import linstor_state, state  # noqa: F401  (re-exported for the tests)

RESULTS = Path(__file__).with_name("results.json")


@dataclass
class Scenario:
    name: str
    checked: str
    runs: int = 0
    passed: int = 0
    seconds: float = 0.0
    started: float = field(default_factory=time.monotonic)
    outcomes: dict = field(default_factory=dict)

    def run(self) -> None:
        """Count one run (call it before the run's checks: a failing check fails this run)."""
        self.runs += 1

    def outcome(self, kind: str) -> None:
        """How an accepted run ended (e.g. completed / failed cleanly), for the report."""
        self.outcomes[kind] = self.outcomes.get(kind, 0) + 1


class Ledger:
    def __init__(self) -> None:
        self.by_test: dict[str, list[Scenario]] = {}

    def book(self, nodeid: str, passed: bool) -> None:
        for sc in self.by_test.get(nodeid, []):
            sc.passed = sc.runs if passed else max(0, sc.runs - 1)
            sc.seconds = round(time.monotonic() - sc.started, 1)

    def write(self) -> None:
        rows = [sc for scs in self.by_test.values() for sc in scs]
        if not rows:
            return
        old = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
        for sc in rows:
            entry = old.setdefault(sc.name, {"checked": sc.checked, "runs": 0, "passed": 0, "seconds": 0.0})
            if entry.get("session") != SESSION:       # a new session replaces, parametrized tests add up
                entry.update(runs=0, passed=0, seconds=0.0, session=SESSION, outcomes={})
            for kind, n in sc.outcomes.items():
                entry["outcomes"][kind] = entry["outcomes"].get(kind, 0) + n
            entry["checked"] = sc.checked
            entry["runs"] += sc.runs
            entry["passed"] += sc.passed
            entry["seconds"] = round(entry["seconds"] + sc.seconds, 1)
        RESULTS.write_text(json.dumps(old, indent=1, sort_keys=True) + "\n")


SESSION = time.strftime("%Y-%m-%dT%H:%M:%S")
LEDGER = Ledger()


@pytest.fixture
def scenario(request):
    """scenario(name, checked) -> Scenario; count runs with .run()."""
    def make(name: str, checked: str) -> Scenario:
        sc = Scenario(name, checked)
        LEDGER.by_test.setdefault(request.node.nodeid, []).append(sc)
        return sc
    return make


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        LEDGER.book(item.nodeid, report.passed)


def pytest_sessionfinish(session, exitstatus):
    LEDGER.write()


def deterministic(lab: Lab) -> None:
    """Explicit nodes: every run makes the same calls (node1, the usual VM host, stays diskless)."""
    for ds in (IMAGE_DS, SYSTEM_DS):
        lab.oned.datastores[ds].template.update(RESOURCE_GROUP="", NODE_LIST="node2 node3", STORAGE_POOL="data")


@pytest.fixture(scope="module")
def renv():
    with Lab(LabConfig(hosts=3)) as lab:
        deterministic(lab)
        yield Env(lab)


def leftovers(env) -> dict:
    """What a finished action must never leave: temporary resources, marks, revert safety snapshots."""
    s = linstor_state(env)
    return {"tmp": [n for n in s["rds"] if n.endswith("-tmp")],
            "temporary_marks": [r[:2] for r in s["resources"] if "Aux/one/TEMPORARY" in dict(r[3])],
            "safety_snapshots": [x for x in s["snapshots"] if x[1] == "linstor_un-revert-safety"]}


NO_LEFTOVERS = {"tmp": [], "temporary_marks": [], "safety_snapshots": []}


def image_file(env, folder: str, size_mb: int, head: bytes = b"") -> Path:
    """A sparse raw image on the front-end holding `head` at offset 0, in a folder the image
    datastore may import from (SAFE_DIRS)."""
    images = env.lab.workdir / folder
    images.mkdir(exist_ok=True)
    path = images / "a.raw"
    with open(path, "wb") as f:
        f.truncate(size_mb << 20)
        f.write(head)
    env.lab.oned.datastores[IMAGE_DS].template["SAFE_DIRS"] = str(images)
    return path
