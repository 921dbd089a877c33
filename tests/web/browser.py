"""Debian's Chromium for the browser tests: found, or installed with apt-get when missing
(``TOKENWIRE_CHROMIUM`` overrides the path). Playwright's own browser download is never used."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

CHROMIUM = Path(os.environ.get("TOKENWIRE_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def ensure_chromium() -> Path:
    """The Chromium binary; installs Debian's ``chromium`` package when it is missing.

    Raises:
        RuntimeError: not found and it cannot be installed (no apt-get, or not root and no
            password-less sudo), with the command to run by hand.
    """
    if CHROMIUM.exists():
        return CHROMIUM
    command = "apt-get update && apt-get install -y chromium"
    if shutil.which("apt-get") is None:
        raise RuntimeError(f"{CHROMIUM} is missing and there is no apt-get: install Chromium")
    prefix = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        subprocess.run([*prefix, "apt-get", "update"], check=True, env=env)
        subprocess.run([*prefix, "apt-get", "install", "-y", "chromium"], check=True, env=env)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise RuntimeError(f"could not install Chromium; run as root: {command}") from exc
    if not CHROMIUM.exists():
        raise RuntimeError(f"the chromium package did not provide {CHROMIUM}")
    return CHROMIUM
