"""The docs pages of every API (Swagger UI at ``…/docs``, ReDoc at ``…/redoc``) load nothing from outside
the server: a utility's network may have no way out to the internet (infra/docs_ui.py).

Each page must name no external host, every script, stylesheet, icon and OpenAPI document it names must be
served under the API's own prefix with the right media type, and the vendored files must be those of the
npm tarballs recorded in vendor.json.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx
import pytest
from fastapi import FastAPI
from starlette.routing import Mount

from derbridge.api.app import create_app
from derbridge.infra.docs_ui import ASSETS, ASSETS_DIR, install_api_docs
from derbridge.runtime import Runtime
from derbridge.settings import Settings
from tests.support.api import client
from tests.support.databases import migrate_from_template

PREFIXES = ("/assethub/v1", "/derms/v1", "/bridge/v1", "/openadr3/3.1.0")
"""Every API that ``derbridge up`` serves, by mount prefix."""

TITLES = {
    "/assethub/v1": "derbridge Asset Hub API",
    "/derms/v1": "derbridge DERMS API",
    "/bridge/v1": "derbridge bridge operations API",
    "/openadr3/3.1.0": "derbridge edge gateway (OpenADR 3.1.0 VTN)",
}

PAGES = ("docs", "redoc")

LOOPBACK = {"127.0.0.1", "localhost", "::1"}

MEDIA_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png", ".json": "application/json"}
"""The media type each kind of referenced URL must be served with (a browser refuses a script served as
text/plain under nosniff, and a stylesheet served as anything but text/css)."""

BASE = "http://derbridge.test"


class _References(HTMLParser):
    """Every ``src``/``href`` of a page, and ReDoc's ``spec-url``."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls.extend(value for name, value in attrs if name in ("src", "href", "spec-url") and value)


def referenced_urls(html: str) -> list[str]:
    """The URLs a docs page makes the browser load: its tags' attributes, and the OpenAPI document that
    Swagger UI's script fetches (``url: '…'``)."""
    parser = _References()
    parser.feed(html)
    return parser.urls + re.findall(r"\burl: '([^']+)'", html)


def external_hosts(text: str) -> set[str]:
    """The hosts of the absolute http(s) URLs in ``text`` that are not loopback."""
    hosts = {urlsplit(url).hostname or url for url in re.findall(r"https?://[^\s\"'<>)]+", text)}
    return hosts - LOOPBACK


@pytest.fixture
async def anonymous(sqlite_settings: Settings, migrated_sqlite: Path) -> AsyncIterator[httpx.AsyncClient]:
    """A client without any credential on the whole server (every API mounted), over SQLite."""
    migrate_from_template(sqlite_settings, migrated_sqlite)
    async with client(Runtime(sqlite_settings), token=None) as api:
        yield api


def test_every_mounted_api_is_covered_here(sqlite_settings: Settings) -> None:
    """A new API mounted on the server must come into PREFIXES (and so under these tests)."""
    runtime = Runtime(sqlite_settings)
    try:
        app = create_app(runtime)
        mounted = {route.path for route in app.routes if isinstance(route, Mount) and isinstance(route.app, FastAPI)}
    finally:
        runtime.close_sync()
    assert mounted == set(PREFIXES)


async def test_docs_pages_need_no_credential_and_load_nothing_from_outside(anonymous: httpx.AsyncClient) -> None:
    for prefix in PREFIXES:
        for page in PAGES:
            response = await anonymous.get(f"{prefix}/{page}")
            assert response.status_code == 200, (prefix, page, response.text)
            assert response.headers["content-type"].startswith("text/html")
            assert external_hosts(response.text) == set(), (prefix, page, response.text)
            assert f"<title>{TITLES[prefix]} - " in response.text
            # The browser may load nothing from another origin, whatever the vendored scripts ask for
            # (ReDoc asks cdn.redoc.ly for a logo).
            policy = dict(
                directive.strip().split(" ", 1) for directive in response.headers["content-security-policy"].split(";")
            )
            assert policy["default-src"] == "'self'"
            assert policy["img-src"] == "'self' data:"
            assert external_hosts(response.headers["content-security-policy"]) == set()


async def test_every_url_a_docs_page_names_is_served_under_its_prefix(anonymous: httpx.AsyncClient) -> None:
    for prefix in PREFIXES:
        for page in PAGES:
            page_url = f"{BASE}{prefix}/{page}"
            html = (await anonymous.get(page_url)).text
            urls = [urljoin(page_url, url) for url in referenced_urls(html)]
            # Swagger UI: script, stylesheet, icon, OpenAPI; ReDoc: icon, OpenAPI, script.
            assert len(urls) >= 3, (prefix, page, html)
            for url in urls:
                path = urlsplit(url).path
                assert url.startswith(f"{BASE}{prefix}/"), (prefix, page, url)
                response = await anonymous.get(url)
                assert response.status_code == 200, (url, response.text[:300])
                suffix = path[path.rfind(".") :]
                assert response.headers["content-type"].startswith(MEDIA_TYPES[suffix]), (url, response.headers)
                if suffix == ".json":
                    assert response.json()["info"]["title"] == TITLES[prefix]


async def test_swagger_ui_calls_the_api_under_its_prefix(anonymous: httpx.AsyncClient) -> None:
    """ "Try it out" sends requests to the document's server: the API's prefix, not the server's root."""
    for prefix in PREFIXES:
        document = (await anonymous.get(f"{prefix}/openapi.json")).json()
        assert document["servers"][0]["url"] == prefix


async def test_the_apis_still_need_their_credentials(anonymous: httpx.AsyncClient) -> None:
    for path in ("/assethub/v1/programs", "/derms/v1/programs", "/bridge/v1/messages"):
        assert (await anonymous.get(path)).status_code == 401, path
    assert (await anonymous.get("/openadr3/3.1.0/programs")).status_code in (401, 403)


async def test_assets_are_served_as_vendored_and_revalidated_by_etag(anonymous: httpx.AsyncClient) -> None:
    for name, asset in ASSETS.items():
        response = await anonymous.get(f"/derms/v1/docs/assets/{name}")
        assert response.status_code == 200
        assert response.headers["content-type"] == asset.media_type
        assert response.content == (ASSETS_DIR / asset.path).read_bytes()
        assert response.headers["etag"] == f'"{hashlib.sha256(response.content).hexdigest()}"'
        again = await anonymous.get(
            f"/derms/v1/docs/assets/{name}", headers={"If-None-Match": response.headers["etag"]}
        )
        assert (again.status_code, again.content) == (304, b"")


async def test_only_the_pages_files_are_served(anonymous: httpx.AsyncClient) -> None:
    for name in ("vendor.json", "LICENSE", "README.md", "swagger-ui-dist", "..%2Fvendor.json", "redoc.js"):
        response = await anonymous.get(f"/assethub/v1/docs/assets/{name}")
        assert response.status_code == 404, name


def test_vendored_files_are_those_recorded_in_the_manifest() -> None:
    """The files are byte for byte the npm tarballs' (refreshed only by tools/vendor_docs_assets.py), each
    package with its licence."""
    manifest = json.loads((ASSETS_DIR / "vendor.json").read_text())
    assert set(manifest) == {"swagger-ui-dist", "redoc"}
    for package, entry in manifest.items():
        assert re.fullmatch(r"\d+\.\d+\.\d+", entry["version"]), entry
        assert entry["integrity"].startswith("sha512-")
        assert "LICENSE" in entry["files"]
        on_disk = {path.name for path in (ASSETS_DIR / package).iterdir()}
        assert on_disk == set(entry["files"]), package
        for name, digest in entry["files"].items():
            assert hashlib.sha256((ASSETS_DIR / package / name).read_bytes()).hexdigest() == digest, name
    for asset in ASSETS.values():
        package, name = asset.path.split("/", 1)
        assert name in manifest[package]["files"]


def test_the_stylesheet_loads_nothing_from_outside() -> None:
    """Swagger UI's stylesheet embeds its images (data: URLs) and imports nothing."""
    css = (ASSETS_DIR / ASSETS["swagger-ui.css"].path).read_text(encoding="utf-8")
    assert "@import" not in css
    assert all(url.strip("\"'").startswith("data:") for url in re.findall(r"url\(([^)]*)\)", css))


def test_an_app_with_fastapis_own_pages_is_refused() -> None:
    """FastAPI's pages (from a CDN) would take /docs first: the helper insists they are off."""
    with pytest.raises(ValueError, match="docs_url=None"):
        install_api_docs(FastAPI())
    with pytest.raises(ValueError, match="OpenAPI"):
        install_api_docs(FastAPI(docs_url=None, redoc_url=None, openapi_url=None))
