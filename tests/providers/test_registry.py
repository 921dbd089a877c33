"""Providers by name (``tokenwire.providers``): built-ins, the ``tokenwire.providers``
entry-point group, and ``module:attribute``; every failure names what was given.

The entry-point provider is a tiny distribution made by the test the way an installer lays one
out (the package, and a ``.dist-info`` with METADATA, entry_points.txt and RECORD) in a
temporary directory put on ``sys.path`` / ``PYTHONPATH``, so the shared venv is never changed
and nothing is left behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.helpers import ServerProcess
from tokenwire.providers import (
    FunctionProvider,
    ProviderLoadError,
    create_provider,
    entry_point_names,
    load_provider,
    provider_names,
)
from tokenwire.providers.scripted import ScriptedProvider
from tokenwire.settings import Settings

PACKAGE = '''\
"""tokenwire-echo: a provider that a package registers by name."""


async def generate(params):
    yield "echo:"
    for word in params.messages[-1].content.split():
        yield " " + word
'''


def install_echo_distribution(site: Path, *, target: str = "tokenwire_echo:generate") -> Path:
    """Lay out the distribution ``tokenwire-echo`` 0.1.0 in ``site``, as pip would."""
    package = site / "tokenwire_echo"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(PACKAGE)
    info = site / "tokenwire_echo-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: tokenwire-echo\nVersion: 0.1.0\nRequires-Dist: tokenwire\n"
    )
    (info / "entry_points.txt").write_text(f"[tokenwire.providers]\necho = {target}\n")
    (info / "INSTALLER").write_text("test\n")
    (info / "RECORD").write_text(
        "tokenwire_echo/__init__.py,,\n"
        + "".join(f"{info.name}/{name},,\n" for name in ("METADATA", "entry_points.txt"))
        + f"{info.name}/INSTALLER,,\n{info.name}/RECORD,,\n"
    )
    return site


def write_module(folder: Path, name: str, source: str) -> None:
    (folder / f"{name}.py").write_text(source)


# -- in-process ------------------------------------------------------------------------------


def test_built_in_names_come_first_and_resolve_lazily():
    assert provider_names()[:3] == ["local", "openai", "scripted"]
    assert isinstance(create_provider(Settings(provider="scripted")), ScriptedProvider)


def test_an_unknown_name_lists_what_is_known():
    with pytest.raises(ProviderLoadError) as error:
        load_provider("nope")
    assert str(error.value) == (
        f"unknown provider 'nope'; choose one of: {', '.join(provider_names())}, "
        "or give module:attribute (an async generator function or a Provider)"
    )


def test_module_attribute_errors_name_what_was_given(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    write_module(tmp_path, "tw_reg_plain", "answer = 42\n\ndef sync(params):\n    return 'x'\n")
    write_module(tmp_path, "tw_reg_broken", "import tw_reg_not_installed\n")
    cases = {
        "tw_reg_missing:generate": (
            "provider 'tw_reg_missing:generate': module 'tw_reg_missing' not found "
            "(is it installed, or its directory on PYTHONPATH?)"
        ),
        "tw_reg_plain:generate": (
            "provider 'tw_reg_plain:generate': module 'tw_reg_plain' has no attribute 'generate'"
        ),
        "tw_reg_plain:answer": (
            "provider 'tw_reg_plain:answer' is a builtins.int object, not a Provider, "
            "a Provider subclass or an async generator function"
        ),
        "tw_reg_plain:sync": (
            "provider 'tw_reg_plain:sync' is the function tw_reg_plain.sync, not a Provider, "
            "a Provider subclass or an async generator function"
        ),
        "tw_reg_broken:generate": (
            "provider 'tw_reg_broken:generate': importing module 'tw_reg_broken' failed: "
            "No module named 'tw_reg_not_installed'"
        ),
    }
    for given, message in cases.items():
        with pytest.raises(ProviderLoadError) as error:
            create_provider(Settings(provider=given))
        assert str(error.value) == message


def test_a_provider_subclass_and_instance_by_module_attribute(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    write_module(
        tmp_path,
        "tw_reg_classes",
        "from tokenwire.providers.scripted import Script, ScriptedProvider\n"
        "instance = ScriptedProvider(Script(tokens=3))\n"
        "Subclass = ScriptedProvider\n",
    )
    settings = Settings(provider="tw_reg_classes:Subclass", scripted_tokens=7)
    built = create_provider(settings)
    assert isinstance(built, ScriptedProvider) and built.script.tokens == 7  # from_settings
    given = create_provider(Settings(provider="tw_reg_classes:instance"))
    assert isinstance(given, ScriptedProvider) and given.script.tokens == 3


def test_an_entry_point_of_an_installed_distribution(tmp_path, monkeypatch):
    site = install_echo_distribution(tmp_path / "site")
    assert "echo" not in entry_point_names()
    monkeypatch.syspath_prepend(str(site))
    assert "echo" in entry_point_names() and "echo" in provider_names()
    provider = create_provider(Settings(provider="echo"))
    assert isinstance(provider, FunctionProvider) and provider.models == ["generate"]


def test_an_entry_point_that_fails_to_load_says_which(tmp_path, monkeypatch):
    site = install_echo_distribution(tmp_path / "site", target="tokenwire_echo:missing")
    monkeypatch.syspath_prepend(str(site))
    with pytest.raises(ProviderLoadError) as error:
        create_provider(Settings(provider="echo"))
    assert str(error.value).startswith(
        "provider 'echo': the entry point 'tokenwire_echo:missing' of group "
        "tokenwire.providers failed to load: AttributeError"
    )


# -- through the CLI: `tokenwire serve` ------------------------------------------------------


def serve_command(*args: str, cwd: Path, pythonpath: Path | None = None) -> tuple[int, str]:
    env = {**os.environ, "COLUMNS": "300", "NO_COLOR": "1", "TERM": "dumb"}
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(pythonpath), env.get("PYTHONPATH", "")])
    result = subprocess.run(
        [sys.executable, "-m", "tokenwire.cli", "serve", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return result.returncode, " ".join((result.stdout + result.stderr).split())


def test_cli_errors_name_the_module_the_attribute_and_what_it_is(tmp_path):
    write_module(tmp_path, "tw_cli_user", "answer = 42\n")
    expected = {
        "tw_cli_absent:generate": "module 'tw_cli_absent' not found",
        "tw_cli_user:generate": "module 'tw_cli_user' has no attribute 'generate'",
        "tw_cli_user:answer": (
            "'tw_cli_user:answer' is a builtins.int object, not a Provider, a Provider "
            "subclass or an async generator function"
        ),
    }
    for given, message in expected.items():
        status, output = serve_command("--provider", given, cwd=tmp_path)
        assert status == 2, output
        assert "tokenwire serve: --provider: provider '" + given in output
        assert message in output, output
        assert "Traceback" not in output


def test_serve_help_lists_an_installed_entry_point(tmp_path):
    site = install_echo_distribution(tmp_path / "site")
    status, output = serve_command("--help", cwd=tmp_path, pythonpath=site)
    assert status == 0
    assert "One of: local, openai, scripted, echo; or module:attribute" in output
    status, output = serve_command("--help", cwd=tmp_path)
    assert "One of: local, openai, scripted; or module:attribute" in output


def test_serve_runs_an_entry_point_provider_by_name(tmp_path):
    site = install_echo_distribution(tmp_path / "site")
    env_path = os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])
    server = ServerProcess(tmp_path, "echo", provider="echo")
    server.env["PYTHONPATH"] = env_path  # the distribution is installed there
    server.start()
    try:
        body = {"messages": [{"role": "user", "content": "hello there"}], "model": "generate"}
        response = httpx.post(server.base_url + "/v1/chat/completions", json=body, timeout=30)
        health = httpx.get(server.base_url + "/healthz").json()
    finally:
        server.stop()
    assert response.json()["choices"][0]["message"]["content"] == "echo: hello there"
    assert health["provider"] == "function"
