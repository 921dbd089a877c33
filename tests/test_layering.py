"""The stream core stands on its own: importing it loads nothing of the edge."""

from __future__ import annotations

import json
import subprocess
import sys

EDGE = ("prometheus_client", "tokenwire.edge")


def test_the_core_imports_nothing_of_the_edge():
    code = (
        "import json, sys\n"
        "import tokenwire.streams, tokenwire.transports\n"
        "import tokenwire.transports.sse, tokenwire.transports.websocket\n"
        "import tokenwire.transports.collect, tokenwire.streams.redis_log\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    loaded = json.loads(result.stdout)
    assert "tokenwire.streams.generation" in loaded  # the probe did import the core
    assert [name for name in loaded if name.startswith(EDGE)] == []


def test_the_server_package_does_not_import_the_client():
    code = (
        "import json, sys\n"
        "import tokenwire.app, tokenwire.cli\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert "tokenwire.app" in json.loads(result.stdout)
    assert [m for m in json.loads(result.stdout) if m.startswith("tokenwire_client")] == []
