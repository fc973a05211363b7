"""Benchmark counters: with LINSTOR_UN_STATS=<file>, one JSON line per action of what it cost
(LINSTOR requests, SSH connections, remote commands, start-up and CPU time). benchmarks/ reads them;
nothing else does."""
from __future__ import annotations

import json
import os
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .action import Action


def _process_start(fallback: float) -> float:
    """When this process started (wall clock), from /proc: so imports are counted too."""
    try:
        ticks = int(open("/proc/self/stat").read().rsplit(")", 1)[1].split()[19])
        uptime = float(open("/proc/uptime").read().split()[0])
        return time.time() - uptime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return fallback


def write(act: "Action", started: float) -> None:
    path = os.environ.get("LINSTOR_UN_STATS")
    if not path:
        return
    hosts = act._hosts
    ssh, commands = hosts.stats() if hosts is not None else (0, 0)
    record = {"action": act.name, "linstor_requests": sum(a.requests for a in act._linstor.values()),
              "ssh_connections": ssh, "remote_commands": commands,
              "startup_seconds": round(act.main_started - _process_start(started), 4),
              # the driver's own CPU time: what is left of the wall time is waiting (controller, hosts)
              "cpu_seconds": round(time.process_time(), 3),
              "remote_steps": hosts.steps() if hosts is not None else []}
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
