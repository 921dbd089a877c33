"""The demo page's files are served at / and /web/, from the source tree and from a wheel."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.helpers import asgi_client, scripted_app
from tokenwire.web import web_root

REPO = Path(__file__).resolve().parents[1]
FILES = (
    "index.html",
    "app.js",
    "tokenwire.js",
    "style.css",
    "vendor/marked.esm.js",
    "vendor/marked.LICENSE",
    "vendor/purify.es.mjs",
    "vendor/dompurify.LICENSE",
    "aisdk.html",
    "aisdk.js",
    "vendor/ai.mjs",
    "vendor/ai.LICENSE",
)


async def test_page_and_its_modules_are_served():
    app, _ = scripted_app()
    async with asgi_client(app) as http:
        page = await http.get("/")
        module = await http.get("/web/tokenwire.js")
        style = await http.get("/web/style.css")
        missing = await http.get("/web/nope.js")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="web/app.js">' in page.text
    assert module.headers["content-type"].startswith(("text/javascript", "application/javascript"))
    assert "export class TokenwireClient" in module.text
    assert style.status_code == 200 and style.headers["content-type"].startswith("text/css")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


async def test_the_ai_sdk_page_imports_the_bundled_sdk():
    app, _ = scripted_app()
    async with asgi_client(app) as http:
        page = await http.get("/aisdk")
        script = await http.get("/web/aisdk.js")
        bundle = await http.get("/web/vendor/ai.mjs")
    assert page.status_code == 200 and '<script type="module" src="web/aisdk.js">' in page.text
    assert 'from "./vendor/ai.mjs"' in script.text
    assert bundle.headers["content-type"].startswith(("text/javascript", "application/javascript"))
    exported = bundle.text.rsplit("export{", 1)[1]
    for name in ("DefaultChatTransport", "WebSocketChatTransport", "readUIMessageStream"):
        assert f" as {name}" in exported


async def test_a_directory_without_the_page_is_a_clear_404(tmp_path):
    app, _ = scripted_app(web_dir=str(tmp_path))
    async with asgi_client(app) as http:
        response = await http.get("/")
        health = await http.get("/healthz")
    assert response.status_code == 404
    assert response.json()["error"]["message"].startswith("the demo page is not installed")
    assert str(tmp_path) in response.json()["error"]["message"]
    assert health.status_code == 200


async def test_the_vendored_modules_are_served_with_their_license_headers():
    app, _ = scripted_app()
    async with asgi_client(app) as http:
        marked = await http.get("/web/vendor/marked.esm.js")
        purify = await http.get("/web/vendor/purify.es.mjs")
    assert marked.headers["content-type"].startswith(("text/javascript", "application/javascript"))
    assert "(MIT License)" in marked.text[:400] and "export{" in marked.text.replace(" ", "")
    assert purify.text.startswith("/*! @license DOMPurify")
    assert "export { purify_default as default }" in purify.text


def test_the_vendored_modules_are_the_pinned_packages():
    """clients/web/vendor/ is what tests/node/vendor_web.py copies from tests/node/node_modules
    (the versions pinned in tests/node/package.json)."""
    script = REPO / "tests" / "node" / "vendor_web.py"
    if not (REPO / "tests" / "node" / "node_modules" / "marked").is_dir():
        pytest.skip("tests/node/node_modules is not installed (make test runs npm ci)")
    check = subprocess.run(
        [sys.executable, str(script), "--check"], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stderr


async def test_models_report_the_context_window_when_known():
    app, provider = scripted_app()
    async with asgi_client(app) as http:
        unknown = (await http.get("/v1/models")).json()["data"][0]
        provider.context_window = 2048
        known = (await http.get("/v1/models")).json()["data"][0]
    assert "context_window" not in unknown
    assert known["context_window"] == 2048 and known["id"] == "scripted"


def test_source_tree_has_the_page():
    root = web_root()
    assert root == REPO / "clients" / "web"
    assert all((root / name).is_file() for name in FILES)


@pytest.mark.slow
def test_wheel_carries_the_page_inside_the_package(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp_path), REPO],
        check=True,
    )
    (wheel,) = tmp_path.glob("tokenwire-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        archive.extractall(tmp_path / "site")
    assert {f"tokenwire/web/{name}" for name in FILES} <= names
    # installed from the wheel, the package finds its own copy first
    found = subprocess.run(
        [sys.executable, "-c", "from tokenwire.web import web_root; print(web_root())"],
        env={"PYTHONPATH": str(tmp_path / "site")},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert found == str(tmp_path / "site" / "tokenwire" / "web")
