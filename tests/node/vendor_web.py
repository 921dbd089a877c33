"""Copy the page's third-party ES modules from the pinned npm packages into clients/web/vendor/.

marked (Markdown) and DOMPurify (HTML sanitizer) are pinned in tests/node/package.json and
installed in tests/node/node_modules (``npm ci``, done by ``make test``). Their ESM builds are
single self-contained files; this script copies them, with each package's license files, so the
page needs no build step and no CDN at run time (the wheel ships clients/web).

    python tests/node/vendor_web.py           # copy (after changing a pin)
    python tests/node/vendor_web.py --check   # exit 1 if the committed copies differ
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

NODE = Path(__file__).resolve().parent / "node_modules"
VENDOR = Path(__file__).resolve().parents[2] / "clients" / "web" / "vendor"

# package: (ESM build inside the package, name in vendor/, license files)
PACKAGES = {
    "marked": ("lib/marked.esm.js", "marked.esm.js", ["LICENSE"]),
    "dompurify": ("dist/purify.es.mjs", "purify.es.mjs", ["LICENSE", "LICENSE-MPL"]),
}


def version(package: str) -> str:
    return str(json.loads((NODE / package / "package.json").read_text())["version"])


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
    files["README.md"] = ("\n".join(lines) + "\n").encode()
    return files


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
