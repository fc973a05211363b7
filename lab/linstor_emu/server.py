"""HTTP(S) front of the emulated controller: LINSTOR's REST API v1 plus the lab's control API.

LINSTOR API requests are recorded (method, path, query, body) in `requests.jsonl`, may be hit by an
injected fault, and (when asked) have their responses checked against the OpenAPI document, with
problems written to `schema-violations.jsonl`. The control API lives under `/__lab/` and is
neither recorded nor faulted.
"""
from __future__ import annotations

import json
import re
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Optional
from urllib.parse import parse_qs, urlsplit

from linstor import sharedconsts as C

from .apicall import Rc, http_status
from .controller import Controller


class Faults:
    """Fault rules: the next `count` requests matching method and path regex get `kind`."""

    def __init__(self) -> None:
        self.rules: list[dict] = []
        self.lock = threading.Lock()

    def add(self, rule: dict) -> None:
        rule = dict(rule)
        rule.setdefault("count", 1)
        rule.setdefault("skip", 0)       # let this many matching requests through first
        rule.setdefault("method", ".*")
        rule["_rx"] = re.compile(rule.get("path", ".*"))
        rule["_mrx"] = re.compile(rule["method"], re.IGNORECASE)
        with self.lock:
            self.rules.append(rule)

    def take(self, method: str, path: str) -> Optional[dict]:
        with self.lock:
            for rule in self.rules:
                if rule["count"] != 0 and rule["_mrx"].fullmatch(method) and rule["_rx"].search(path):
                    if rule["skip"] > 0:
                        rule["skip"] -= 1
                        continue
                    if rule["count"] > 0:
                        rule["count"] -= 1
                    return rule
        return None

    def clear(self) -> None:
        with self.lock:
            self.rules.clear()


class Emulator:
    def __init__(self, config: dict):
        self.config = config
        self.dir = Path(config["state_dir"])
        self.controller = Controller(self.dir, config)
        self.controller.reattach_devices()
        self.faults = Faults()
        self.requests_file = self.dir / "requests.jsonl"
        self.violations_file = self.dir / "schema-violations.jsonl"
        self.log_lock = threading.Lock()
        self.checker = None
        if config.get("validate_schema"):
            from .schema import checker
            self.checker = checker(self.controller.spec.release)
        self.servers: list[ThreadingHTTPServer] = []

    def _append(self, path: Path, record: dict) -> None:
        with self.log_lock, open(path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def record(self, method: str, path: str, query: dict, body: Any) -> None:
        self._append(self.requests_file, {"t": time.time(), "method": method, "path": path, "query": query,
                                          "body": body})

    def timed(self, method: str, path: str, seconds: float) -> None:
        """How long the controller took over a request (benchmarks subtract it: the emulator copies
        bytes where LVM thin and ZFS take snapshots and restores in O(1))."""
        self._append(self.dir / "timings.jsonl", {"t": time.time(), "method": method, "path": path,
                                                  "s": round(seconds, 4)})

    def validate(self, method: str, path: str, status: int, body: Any) -> None:
        if self.checker is None:
            return
        for problem in self.checker.check(method, path, status, body):
            self._append(self.violations_file, {"method": method, "path": path, "status": status,
                                                "problem": problem})

    # ---- control API ---------------------------------------------------------------------------
    def control(self, method: str, path: str, query: dict, body: Any) -> tuple[int, Any]:
        c = self.controller
        if path == "/__lab/ping":
            return 200, {"ok": True}
        if path == "/__lab/faults" and method == "POST":
            self.faults.add(body)
            return 200, {"ok": True}
        if path == "/__lab/faults" and method == "DELETE":
            self.faults.clear()
            return 200, {"ok": True}
        if path == "/__lab/requests" and method == "GET":
            if not self.requests_file.exists():
                return 200, []
            return 200, [json.loads(x) for x in self.requests_file.read_text().splitlines() if x]
        if path == "/__lab/requests" and method == "DELETE":
            self.requests_file.unlink(missing_ok=True)
            return 200, {"ok": True}
        if path == "/__lab/state":
            return 200, c.snapshot_state()
        if path == "/__lab/node-status" and method == "POST":
            c.set_node_status(body["node"], body["status"])
            return 200, {"ok": True}
        if path == "/__lab/thin-chunk" and method == "POST":
            c.set_thin_chunk(body["kib"])
            return 200, {"ok": True}
        if path == "/__lab/resize-fails" and method == "POST":
            c.fail_resize(body["resource"], body["node"])
            return 200, {"ok": True}
        if path == "/__lab/in-use" and method == "POST":
            c.set_in_use(body["resource"], body["node"], bool(body["in_use"]))
            return 200, {"ok": True}
        if path == "/__lab/release-devices" and method == "POST":
            c.release_all_devices()
            return 200, {"ok": True}
        if path == "/__lab/bulk" and method == "POST":
            c.bulk_definitions(**body)
            return 200, {"ok": True}
        if path == "/__lab/volume-file":
            return 200, {"path": str(c.data.volume_file(query["resource"][0], int(query.get("volume", ["0"])[0])))}
        return 404, {"error": f"no control endpoint {method} {path}"}

    # ---- serving -------------------------------------------------------------------------------
    def make_handler(self):
        emu = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            server_version = "LINSTOR-emulator"
            # headers and body go out in two writes; without TCP_NODELAY the body waits for the
            # client's delayed ACK (~40 ms a request), a cost the real (Java) controller does not have
            disable_nagle_algorithm = True

            def log_message(self, fmt: str, *args: Any) -> None:   # keep the test output clean
                pass

            def _send(self, status: int, body: Any, content_type: str = "application/json") -> None:
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _drop(self) -> None:
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

            def _dispatch(self, method: str) -> None:
                parts = urlsplit(self.path)
                query = parse_qs(parts.query)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = None           # the controller answers it as the release would
                if parts.path.startswith("/__lab/"):
                    status, out = emu.control(method, parts.path, query, body)
                    self._send(status, out)
                    return
                emu.record(method, parts.path, query, body)
                fault = emu.faults.take(method, parts.path)
                kind = fault["kind"] if fault else None
                if kind in ("delay", "hang"):
                    time.sleep(float(fault.get("seconds", 3600 if kind == "hang" else 1)))
                if kind == "drop":
                    self._drop()
                    return
                if kind == "rc":
                    rc = Rc(int(fault["ret_code"]) & ((1 << 64) - 1) if int(fault["ret_code"]) < 0
                            else int(fault["ret_code"]), fault.get("message", "Injected failure"),
                            cause=fault.get("cause"))
                    if rc.is_error:
                        rc.error_report_ids.append(emu.controller.add_error_report(rc.message, "injected"))
                    out = [rc.to_json()]
                    status = int(fault.get("status") or http_status([rc], 500))
                    emu.validate(method, parts.path, status, out)
                    self._send(status, out)
                    return
                if kind == "http":
                    status = int(fault.get("status", 500))
                    text = fault.get("text", "<html><body><h1 class='header'>Internal Server Error</h1></body></html>")
                    self._send(status, text.encode(), "text/html")
                    return
                started = time.monotonic()
                status, out = emu.controller.handle(method, parts.path, query, raw)
                emu.timed(method, parts.path, time.monotonic() - started)
                emu.validate(method, parts.path, status, out)
                if kind == "drop_after":
                    self._drop()
                    return
                if kind == "delay_after":
                    time.sleep(float(fault.get("seconds", 1)))
                self._send(status, out)

            def do_GET(self) -> None:
                self._dispatch("GET")

            def do_POST(self) -> None:
                self._dispatch("POST")

            def do_PUT(self) -> None:
                self._dispatch("PUT")

            def do_DELETE(self) -> None:
                self._dispatch("DELETE")

            def do_PATCH(self) -> None:
                self._dispatch("PATCH")

        return Handler

    def serve(self) -> None:
        host = self.config.get("host", "127.0.0.1")
        handler = self.make_handler()
        if self.config.get("http_port") is not None:
            self.servers.append(ThreadingHTTPServer((host, int(self.config["http_port"])), handler))
        tls = self.config.get("tls")
        if tls and self.config.get("https_port") is not None:
            server = ThreadingHTTPServer((host, int(self.config["https_port"])), handler)
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(tls["cert"], tls["key"])
            if tls.get("ca"):
                ctx.load_verify_locations(tls["ca"])
                ctx.verify_mode = ssl.CERT_REQUIRED if tls.get("require_client_cert", True) else ssl.CERT_OPTIONAL
            server.socket = ctx.wrap_socket(server.socket, server_side=True)
            self.servers.append(server)
        for server in self.servers:
            server.daemon_threads = True
        threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in self.servers[1:]]
        for t in threads:
            t.start()
        ready = self.config.get("ready_file")
        if ready:
            Path(ready).write_text("ready")
        self.servers[0].serve_forever()
