"""A throw-away CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl."""
from __future__ import annotations

import subprocess
from pathlib import Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=cwd)


def make_tls(directory: Path) -> dict[str, str]:
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=lab-ca",
             "-keyout", "ca.key", "-out", "ca.crt", cwd=d)
    (d / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name, ext in (("server", ["-extfile", "server.ext"]), ("client", []), ("rogue", [])):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", f"{name}.key",
                 "-out", f"{name}.csr", cwd=d)
        if name == "rogue":      # signed by nobody the controller trusts
            _openssl("x509", "-req", "-in", "rogue.csr", "-signkey", "rogue.key", "-days", "2",
                     "-out", "rogue.crt", cwd=d)
        else:
            _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                     "-CAcreateserial", "-days", "2", "-out", f"{name}.crt", *ext, cwd=d)
    return {"ca": str(d / "ca.crt"), "server_cert": str(d / "server.crt"), "server_key": str(d / "server.key"),
            "client_cert": str(d / "client.crt"), "client_key": str(d / "client.key"),
            "rogue_cert": str(d / "rogue.crt"), "rogue_key": str(d / "rogue.key")}
