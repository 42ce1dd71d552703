#!/usr/bin/env python3
"""Vendor the API docs pages' browser assets (Swagger UI, ReDoc) from the npm registry into the package.

The docs pages of every derbridge API load these files from the server itself, never from a CDN, so they
work in a utility's offline network (see src/derbridge/infra/docs_assets/README.md). This script is the
only way those files change:

    python3 tools/vendor_docs_assets.py            # fetch the pinned versions again (reproduces the files)
    python3 tools/vendor_docs_assets.py --latest   # newest swagger-ui-dist 5.x and redoc 2.x
    python3 tools/vendor_docs_assets.py --swagger-ui-dist 5.36.0 --redoc 2.5.2

(``make vendor-docs-assets`` runs the first form; ``make vendor-docs-assets ARGS=--latest`` the second.)

It needs only Python's standard library and ``npm`` (``npm view`` to resolve versions, ``npm pack`` to
download the published tarball, whose integrity npm checks against the registry). It copies only the files
the pages load, with the packages' licence files, and rewrites ``vendor.json``: each package's version,
tarball integrity, and each file's SHA-256 (a test compares the files with it).

The majors are those FastAPI's own CDN defaults use (``swagger-ui-dist@5``, ``redoc@2``): the pages are
FastAPI's HTML, written for them. ReDoc 3 is a different script (an ES module) that reports telemetry to
Redocly by default: not for an offline network without a review.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

ASSETS = Path(__file__).resolve().parent.parent / "src" / "derbridge" / "infra" / "docs_assets"
MANIFEST = ASSETS / "vendor.json"


class Package(NamedTuple):
    """What is taken from one npm package."""

    major: int
    files: dict[str, str]
    """path in the tarball (under ``package/``) → file name here"""


PACKAGES = {
    "swagger-ui-dist": Package(
        major=5,
        files={
            "swagger-ui-bundle.js": "swagger-ui-bundle.js",
            "swagger-ui-bundle.js.LICENSE.txt": "swagger-ui-bundle.js.LICENSE.txt",
            "swagger-ui.css": "swagger-ui.css",
            "favicon-32x32.png": "favicon-32x32.png",
            "LICENSE": "LICENSE",
            "NOTICE": "NOTICE",
        },
    ),
    "redoc": Package(
        major=2,
        files={
            "bundles/redoc.standalone.js": "redoc.standalone.js",
            "bundles/redoc.standalone.js.LICENSE.txt": "redoc.standalone.js.LICENSE.txt",
            "LICENSE": "LICENSE",
        },
    ),
}


def npm(*args: str, cwd: Path | None = None) -> str:
    """Run npm and return its standard output; stop with its error output if it fails."""
    npm_path = shutil.which("npm")
    if npm_path is None:
        sys.exit("npm is not on PATH: it is needed to download the packages from the npm registry")
    done = subprocess.run([npm_path, *args], cwd=cwd, capture_output=True, text=True, check=False)  # noqa: S603
    if done.returncode != 0:
        sys.exit(f"npm {' '.join(args)} failed:\n{done.stderr}")
    return done.stdout


def latest_in_major(package: str, major: int) -> str:
    """The newest published version of ``package`` within ``major`` (npm's own range resolution)."""
    found = json.loads(npm("view", f"{package}@{major}", "version", "--json"))
    # One version matching gives a string, several a list in publication order.
    return str(found[-1] if isinstance(found, list) else found)


def sha256(path: Path) -> str:
    """The SHA-256 of a file, in hex."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def vendor(package: str, version: str, pinned: dict[str, Any] | None, work: Path) -> dict[str, Any]:
    """Download ``package@version`` with ``npm pack`` and copy its files into ASSETS/package; return its
    manifest entry. The same version as ``pinned`` must come with the same tarball integrity."""
    packed = json.loads(npm("pack", f"{package}@{version}", "--json", cwd=work))[0]
    if pinned is not None and pinned.get("version") == version and pinned.get("integrity") != packed["integrity"]:
        sys.exit(f"{package}@{version}: the registry's tarball is not the one pinned in {MANIFEST.name}")
    target = ASSETS / package
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    files: dict[str, str] = {}
    with tarfile.open(work / packed["filename"]) as tarball:
        described = tarball.extractfile("package/package.json")
        licence = json.load(described)["license"] if described is not None else None
        for inside, name in PACKAGES[package].files.items():
            member = tarball.getmember(f"package/{inside}")
            source = tarball.extractfile(member)
            if source is None:
                sys.exit(f"{package}@{version}: {inside} is not a regular file")
            (target / name).write_bytes(source.read())
            files[name] = sha256(target / name)
    return {
        "version": version,
        "tarball": f"https://registry.npmjs.org/{package}/-/{package}-{version}.tgz",
        "integrity": packed["integrity"],
        "license": licence,
        "files": files,
    }


def main() -> None:
    """Parse the arguments, vendor each package, write the manifest."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--latest", action="store_true", help="newest version of each package in its major")
    for package in PACKAGES:
        parser.add_argument(f"--{package}", metavar="VERSION", help=f"an exact {package} version")
    arguments = parser.parse_args()
    manifest: dict[str, dict[str, Any]] = json.loads(MANIFEST.read_text()) if MANIFEST.exists() else {}
    with tempfile.TemporaryDirectory(prefix="derbridge-vendor-") as scratch:
        for package, spec in PACKAGES.items():
            chosen = getattr(arguments, package.replace("-", "_"))
            if chosen is None and arguments.latest:
                chosen = latest_in_major(package, spec.major)
            if chosen is None:
                chosen = manifest.get(package, {}).get("version") or latest_in_major(package, spec.major)
            manifest[package] = vendor(package, str(chosen), manifest.get(package), Path(scratch))
            print(f"{package}@{chosen}: {', '.join(manifest[package]['files'])}")
    MANIFEST.write_text(json.dumps(manifest, indent=2) + "\n")


if __name__ == "__main__":
    main()
