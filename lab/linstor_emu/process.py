"""Start, stop and steer the emulated controller from tests, the demo and benchmarks."""
from __future__ import annotations

import json
import os
import signal
import socket

import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from .versions import NEWEST

REPO = Path(__file__).resolve().parents[2]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass
class EmulatorConfig:
    state_dir: Path
    nodes: list[dict]
    resource_groups: list[dict] = field(default_factory=list)
    host_devdirs: dict[str, str] = field(default_factory=dict)
    http_port: Optional[int] = None
    https_port: Optional[int] = None
    tls: Optional[dict] = None            # {"cert", "key", "ca", "require_client_cert"}
    validate_schema: bool = True
    controller_props: dict = field(default_factory=dict)
    passphrase: bool = True
    rest_api_version: Optional[str] = None      # None: what `version` reports (versions.py)
    version: str = NEWEST


class LinstorEmulator:
    def __init__(self, config: EmulatorConfig):
        self.config = config
        self.dir = Path(config.state_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        if config.http_port is None:
            config.http_port = free_port()
        if config.tls and config.https_port is None:
            config.https_port = free_port()
        self.proc: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        return f"linstor://127.0.0.1:{self.config.http_port}"

    @property
    def https_url(self) -> str:
        return f"linstor+ssl://127.0.0.1:{self.config.https_port}"

    def _config_json(self) -> dict:
        c = self.config
        return {"state_dir": str(self.dir), "nodes": c.nodes, "resource_groups": c.resource_groups,
                "host_devdirs": c.host_devdirs, "http_port": c.http_port, "https_port": c.https_port,
                "tls": c.tls, "validate_schema": c.validate_schema, "controller_props": c.controller_props,
                "passphrase": c.passphrase, "rest_api_version": c.rest_api_version, "version": c.version,
                "ready_file": str(self.dir / "ready")}

    def start(self, timeout: float = 20) -> None:
        cfg = self.dir / "emulator.json"
        cfg.write_text(json.dumps(self._config_json()))
        ready = self.dir / "ready"
        ready.unlink(missing_ok=True)
        log = open(self.dir / "emulator.log", "a")
        env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.proc = subprocess.Popen([sys.executable, "-m", "lab.linstor_emu", str(cfg)], stdout=log,
                                     stderr=log, env=env, cwd=str(REPO))
        deadline = time.time() + timeout
        while not ready.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"LINSTOR emulator exited: {(self.dir / 'emulator.log').read_text()[-2000:]}")
            if time.time() > deadline:
                raise TimeoutError("LINSTOR emulator did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        """Take the controller down (its state and the volumes' devices stay)."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def shutdown(self) -> None:
        """Lab teardown: release all loop devices and stop."""
        if self.running:
            try:
                self.control("POST", "/__lab/release-devices", {})
            except OSError:
                pass
        self.stop()

    # ---- control API -----------------------------------------------------------------------
    def control(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://127.0.0.1:{self.config.http_port}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())

    def add_fault(self, path: str, kind: str, method: str = ".*", count: int = 1, skip: int = 0, **kw: Any) -> None:
        """kind: rc (ret_code, message, status), http (status), drop, drop_after, delay, delay_after, hang.
        The first `skip` matching requests pass; the next `count` (-1: all) get the fault."""
        self.control("POST", "/__lab/faults", {"path": path, "kind": kind, "method": method, "count": count,
                                               "skip": skip, **kw})

    def clear_faults(self) -> None:
        self.control("DELETE", "/__lab/faults")

    def requests(self) -> list[dict]:
        return self.control("GET", "/__lab/requests")

    def controller_seconds(self, since: float) -> float:
        """Seconds the controller spent handling requests that started after `since` (time.time())."""
        path = self.dir / "timings.jsonl"
        if not path.exists():
            return 0.0
        total = 0.0
        for line in path.read_text().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("t", 0) - entry.get("s", 0) >= since:
                total += entry.get("s", 0)
        return total

    def clear_requests(self) -> None:
        self.control("DELETE", "/__lab/requests")

    def state(self) -> dict:
        return self.control("GET", "/__lab/state")

    def set_node_status(self, node: str, status: str) -> None:
        self.control("POST", "/__lab/node-status", {"node": node, "status": status})

    def set_thin_chunk(self, kib: int) -> None:
        """The chunk size of the thin pools' stand-in for snapshots taken from now on."""
        self.control("POST", "/__lab/thin-chunk", {"kib": kib})

    def fail_resize(self, resource: str, node: str) -> None:
        """The next growth of `resource` fails on `node`'s satellite (its devices keep their size)."""
        self.control("POST", "/__lab/resize-fails", {"resource": resource, "node": node})

    def set_in_use(self, resource: str, node: str, in_use: bool = True) -> None:
        self.control("POST", "/__lab/in-use", {"resource": resource, "node": node, "in_use": in_use})

    def volume_file(self, resource: str, volume: int = 0) -> Path:
        return Path(self.control("GET", f"/__lab/volume-file?resource={resource}&volume={volume}")["path"])

    def violations(self) -> list[dict]:
        path = self.dir / "schema-violations.jsonl"
        if not path.exists():
            return []
        return [json.loads(x) for x in path.read_text().splitlines() if x]


