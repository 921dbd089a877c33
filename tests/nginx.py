"""A real nginx of the test's own in front of a tokenwire server: Debian's ``nginx`` binary,
started as a plain child process (never the system service) with its prefix, pid file, logs
and temporary folders in the test's ``tmp_path``, listening on free loopback ports, plain HTTP
and TLS (a self-signed certificate made with ``openssl``).

Its ``server`` block is the README's, read from the README (section "Behind nginx"), so the
documented recipe is the tested one; only the ports, the certificate and the upstream change.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import free_port

README = Path(__file__).resolve().parents[1] / "README.md"
PUBLIC_NAME = "chat.example.test"  # the public name clients use (mapped to 127.0.0.1)


def readme_recipe() -> str:
    """The first ``nginx`` code block of the README's "Behind nginx" section."""
    text = README.read_text()
    section = text[text.index("## Behind nginx") :]
    match = re.search(r"```nginx\n(.*?)```", section, re.DOTALL)
    assert match, "README: no nginx block under 'Behind nginx'"
    return match.group(1)


def self_signed(folder: Path, name: str) -> tuple[Path, Path]:
    """A certificate for ``name`` and its key, made with ``openssl``."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"]
        + ["-keyout", str(key), "-out", str(cert), "-subj", f"/CN={name}"]
        + ["-addext", f"subjectAltName=DNS:{name}"],
        check=True,
        capture_output=True,
    )
    return cert, key


class Nginx:
    """nginx on two free loopback ports (``http_port``, ``tls_port``) proxying to
    ``upstream_port`` with the README's recipe; ``extra`` lines are added to its
    ``location /`` block (``proxy_set_header Host $host;``)."""

    def __init__(self, tmp_path: Path, upstream_port: int, *, extra: str = "") -> None:
        executable = shutil.which("nginx")
        if executable is None:  # `make test` installs it; a bare pytest run must say so
            pytest.fail("nginx is not installed (apt-get install nginx)")
        self.executable = executable
        self.prefix = tmp_path / "nginx"
        self.prefix.mkdir(parents=True)
        self.http_port = free_port()
        self.tls_port = free_port()
        cert, key = self_signed(self.prefix, PUBLIC_NAME)
        server = readme_recipe()
        replacements = {
            "listen 443 ssl;": f"listen 127.0.0.1:{self.tls_port} ssl;\n"
            f"    listen 127.0.0.1:{self.http_port};",
            "/etc/ssl/certs/chat.example.com.pem": str(cert),
            "/etc/ssl/private/chat.example.com.key": str(key),
            "http://127.0.0.1:8000;": f"http://127.0.0.1:{upstream_port};",
            "proxy_http_version 1.1;": "proxy_http_version 1.1;\n        " + extra,
        }
        for old, new in replacements.items():
            assert old in server, f"README recipe changed: {old!r} not found"
            server = server.replace(old, new)
        user = ""
        if os.geteuid() == 0:  # workers keep the test's user (they read tmp_path)
            user = f"user {pwd.getpwuid(os.geteuid()).pw_name};"
        temp = "\n".join(
            f"    {kind}_temp_path {self.prefix / kind};"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        self.error_log = self.prefix / "error.log"
        self.config = self.prefix / "nginx.conf"
        self.config.write_text(
            f"{user}\nworker_processes 1;\ndaemon off;\npid {self.prefix / 'nginx.pid'};\n"
            f"error_log {self.error_log} info;\nevents {{ worker_connections 256; }}\n"
            f"http {{\n    access_log {self.prefix / 'access.log'};\n{temp}\n{server}\n}}\n"
        )
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, *, tls: bool = False, scheme: str = "http") -> str:
        """The public URL: ``PUBLIC_NAME`` (the client maps it to 127.0.0.1) and a port."""
        port = self.tls_port if tls else self.http_port
        return f"{scheme}{'s' if tls else ''}://{PUBLIC_NAME}:{port}"

    def log(self) -> str:
        return self.error_log.read_text(errors="replace") if self.error_log.exists() else ""

    def __enter__(self) -> Nginx:
        self.process = subprocess.Popen(
            [self.executable, "-p", str(self.prefix), "-e", str(self.error_log)]
            + ["-c", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 20
        for port in (self.http_port, self.tls_port):
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    pass
                if self.process.poll() is not None or time.monotonic() > deadline:
                    stderr = self.process.stderr.read().decode() if self.process.stderr else ""
                    raise RuntimeError(f"nginx did not start:\n{stderr}\n{self.log()}")
                time.sleep(0.02)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.process is not None:
            self.process.terminate()  # SIGTERM: fast shutdown of master and workers
            self.process.wait(timeout=20)
            if self.process.stderr:
                self.process.stderr.close()
