"""Copy the pages' third-party ES modules from the pinned npm packages into clients/web/vendor/.

marked (Markdown) and DOMPurify (HTML sanitizer) are pinned in tests/node/package.json and
installed in tests/node/node_modules (``npm ci``, done by ``make test``). Their ESM builds are
single self-contained files; this script copies them, with each package's license files, so the
page needs no build step and no CDN at run time (the wheel ships clients/web).

The AI SDK page's ``ai.mjs`` is a bundle: esbuild (pinned beside the packages) bundles
``aisdk_bundle.mjs`` (what the page imports from the pinned ``ai``) with ``ai``'s own
dependencies into one minified ES module; the license file of every package it draws from is
copied beside it (esbuild's metafile lists them). esbuild's output is deterministic, so
``--check`` rebuilds and compares.

    python tests/node/vendor_web.py           # copy (after changing a pin)
    python tests/node/vendor_web.py --check   # exit 1 if the committed copies differ
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

NODE = Path(__file__).resolve().parent / "node_modules"
VENDOR = Path(__file__).resolve().parents[2] / "clients" / "web" / "vendor"

# package: (ESM build inside the package, name in vendor/, license files)
PACKAGES = {
    "marked": ("lib/marked.esm.js", "marked.esm.js", ["LICENSE"]),
    "dompurify": ("dist/purify.es.mjs", "purify.es.mjs", ["LICENSE", "LICENSE-MPL"]),
}


BUNDLE_ENTRY = Path(__file__).resolve().parent / "aisdk_bundle.mjs"
BUNDLE = "ai.mjs"
_PACKAGE_OF = re.compile(r"node_modules/((?:@[^/]+/)?[^/]+)/")


def version(package: str) -> str:
    return str(_package_json(package)["version"])


def vendored() -> dict[str, bytes]:
    """The files vendor/ should hold, by name: the modules (their source-map comment dropped,
    as the maps are not copied), the license files, and a README naming the versions."""
    files: dict[str, bytes] = {}
    lines = ["# Vendored ES modules", "", "Copied by `tests/node/vendor_web.py` from the npm", ""]
    lines[2] += " packages pinned in `tests/node/package.json`; do not edit by hand."
    for package, (source, target, licenses) in PACKAGES.items():
        text = (NODE / package / source).read_text(encoding="utf-8")
        kept = [line for line in text.splitlines() if not line.startswith("//# sourceMappingURL=")]
        files[target] = ("\n".join(kept).rstrip() + "\n").encode()
        for license_file in licenses:
            files[f"{package}.{license_file}"] = (NODE / package / license_file).read_bytes()
        lines.append(f"- `{target}`: {package} {version(package)} ({package}.LICENSE)")
    bundle, packages = bundled()
    files[BUNDLE] = bundle
    lines.append(f"- `{BUNDLE}`: esbuild {version('esbuild')} bundle of `aisdk_bundle.mjs` from:")
    for package in packages:
        license_file = license_of(package)
        name = f"{package.replace('/', '+')}.LICENSE"
        files[name] = license_file.read_bytes()
        lines.append(f"  - {package} {version(package)} ({name})")
    files["README.md"] = ("\n".join(lines) + "\n").encode()
    return files


def bundled() -> tuple[bytes, list[str]]:
    """The AI SDK bundle and the npm packages it is built from (sorted)."""
    with tempfile.TemporaryDirectory() as tmp:
        out, meta = Path(tmp) / BUNDLE, Path(tmp) / "meta.json"
        subprocess.run(
            [str(NODE / ".bin" / "esbuild"), BUNDLE_ENTRY.name, "--bundle", "--format=esm"]
            + ["--platform=browser", "--target=es2022", "--minify", "--legal-comments=none"]
            + [f"--metafile={meta}", f"--outfile={out}", "--log-level=warning"],
            cwd=BUNDLE_ENTRY.parent,
            check=True,
        )
        inputs = json.loads(meta.read_text())["inputs"]
        packages = sorted({m.group(1) for path in inputs if (m := _PACKAGE_OF.search(path))})
        return out.read_bytes(), packages


def license_of(package: str) -> Path:
    """The license file of an installed package; for a package that ships none, that of a
    bundled package from the same repository under the same license (``@ai-sdk/provider-utils``
    ships none: the vercel/ai repository's is ``ai``'s). Raises ``FileNotFoundError``."""
    own = _license_file(package)
    if own is not None:
        return own
    meta = _package_json(package)
    for sibling in ("ai", "@ai-sdk/provider"):
        other = _package_json(sibling)
        same = _repository(other) == _repository(meta) and other["license"] == meta["license"]
        found = _license_file(sibling)
        if same and found is not None:
            return found
    raise FileNotFoundError(f"{package} ships no license file")


def _license_file(package: str) -> Path | None:
    for candidate in ("LICENSE", "LICENSE.md", "LICENSE.txt", "LICENCE"):
        path = NODE / package / candidate
        if path.is_file():
            return path
    return None


def _package_json(package: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((NODE / package / "package.json").read_text())
    return data


def _repository(meta: dict[str, Any]) -> str | None:
    repository = meta.get("repository")
    return repository.get("url") if isinstance(repository, dict) else repository


def main(argv: list[str]) -> int:
    if not NODE.is_dir():
        print(f"no {NODE}: run `npm ci` in tests/node first", file=sys.stderr)
        return 2
    files = vendored()
    if "--check" in argv:
        stale = [
            n
            for n, data in files.items()
            if not (VENDOR / n).is_file() or (VENDOR / n).read_bytes() != data
        ]
        for name in stale:
            print(f"clients/web/vendor/{name} differs from the pinned package", file=sys.stderr)
        return 1 if stale else 0
    VENDOR.mkdir(exist_ok=True)
    for name, data in files.items():
        (VENDOR / name).write_bytes(data)
        print(f"clients/web/vendor/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
