"""The docs pages of every derbridge API — Swagger UI at ``docs``, ReDoc at ``redoc`` — with their scripts,
stylesheet and icon served by the API itself from the package, never from a CDN.

FastAPI's own pages load Swagger UI and ReDoc from jsDelivr (and ReDoc's fonts from Google): in a utility's
network with no way out to the internet they stay blank. The files are vendored from npm into
``infra/docs_assets`` (see its README: versions, licences, ``make vendor-docs-assets``). Each API serves
them under its own prefix (``…/docs/assets/<file>``), so an API works the same mounted in ``derbridge up``,
alone in ``derbridge serve``, or served on its own in a test.

Each page also carries a Content-Security-Policy that lets the browser load nothing from another origin:
the vendored ReDoc still asks ``cdn.redoc.ly`` for the logo of its "API docs by Redocly" link, which the
policy stops before it leaves the machine (the image hides itself when it fails).

Like FastAPI's pages, these need no credential: they describe the API and call nothing. Every call made
from them ("Try it out") still needs the API's own credential.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

from fastapi import FastAPI, HTTPException, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import FileResponse, HTMLResponse, Response

ASSETS_DIR = Path(__file__).with_name("docs_assets")
"""Where the vendored files are (in the source tree and in an installed package alike)."""

DOCS_PATH = "/docs"
REDOC_PATH = "/redoc"
ASSETS_PATH = DOCS_PATH + "/assets"
OAUTH2_REDIRECT_PATH = DOCS_PATH + "/oauth2-redirect"


class Asset(NamedTuple):
    """One file the pages load: where it is under ASSETS_DIR and what it is."""

    path: str
    media_type: str


ASSETS: dict[str, Asset] = {
    # Explicit media types, not guessed from the file name: some platforms' tables answer text/plain for
    # .js, which a browser refuses to run under ``X-Content-Type-Options: nosniff``.
    "swagger-ui-bundle.js": Asset("swagger-ui-dist/swagger-ui-bundle.js", "text/javascript; charset=utf-8"),
    "swagger-ui.css": Asset("swagger-ui-dist/swagger-ui.css", "text/css; charset=utf-8"),
    "favicon.png": Asset("swagger-ui-dist/favicon-32x32.png", "image/png"),
    "redoc.standalone.js": Asset("redoc/redoc.standalone.js", "text/javascript; charset=utf-8"),
}
"""The files served at ``…/docs/assets/<name>``, by name. Nothing else in ASSETS_DIR is served."""


_SAME_ORIGIN_ONLY = (
    "default-src 'self'",
    "img-src 'self' data:",  # Swagger UI's and ReDoc's icons are data: URLs in their CSS
    "style-src 'self' 'unsafe-inline'",  # both style with inline attributes, ReDoc with <style> elements
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'self'",
)
SWAGGER_UI_POLICY = "; ".join((*_SAME_ORIGIN_ONLY, "script-src 'self' 'unsafe-inline'"))
"""The Swagger UI page's policy: FastAPI's page starts Swagger UI from an inline script."""
REDOC_POLICY = "; ".join((*_SAME_ORIGIN_ONLY, "script-src 'self'", "worker-src 'self' blob:"))
"""The ReDoc page's policy: ReDoc runs its search index in a worker made from a blob: URL."""


def _etags() -> dict[str, str]:
    # The content's SHA-256 from the vendoring manifest: a browser revalidates with it (304, no body) and
    # gets the new file as soon as a refresh changes it, whatever the file's modification time.
    manifest = json.loads((ASSETS_DIR / "vendor.json").read_text(encoding="utf-8"))
    etags: dict[str, str] = {}
    for name, asset in ASSETS.items():
        package, file = asset.path.split("/", 1)
        etags[name] = f'"{manifest[package]["files"][file]}"'
    return etags


_ETAGS = _etags()


def install_api_docs(app: FastAPI) -> None:
    """Serve ``app``'s docs pages (``/docs``, ``/redoc``) and their assets (``/docs/assets/…``) from the
    package. ``app`` must be created with ``docs_url=None, redoc_url=None``: FastAPI's own pages would
    otherwise take those paths first, and they load everything from a CDN."""
    if app.docs_url is not None or app.redoc_url is not None:
        raise ValueError("create the app with docs_url=None and redoc_url=None: install_api_docs serves them")
    if app.openapi_url is None:
        raise ValueError("the app has no OpenAPI document to show")
    openapi_url = app.openapi_url

    def prefix(request: Request) -> str:
        # Where this app is mounted (and any proxy prefix given to the server), as FastAPI's pages do.
        root_path: str = request.scope.get("root_path", "")
        return root_path.rstrip("/")

    @app.get(DOCS_PATH, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = prefix(request)
        page = get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_PATH}/favicon.png",
            oauth2_redirect_url=root + OAUTH2_REDIRECT_PATH,
            init_oauth=app.swagger_ui_init_oauth,
            swagger_ui_parameters=app.swagger_ui_parameters,
        )
        page.headers["Content-Security-Policy"] = SWAGGER_UI_POLICY
        return page

    @app.get(OAUTH2_REDIRECT_PATH, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get(REDOC_PATH, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = prefix(request)
        page = get_redoc_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{ASSETS_PATH}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS_PATH}/favicon.png",
            with_google_fonts=False,  # ReDoc falls back to the system's fonts
        )
        page.headers["Content-Security-Policy"] = REDOC_POLICY
        return page

    @app.get(ASSETS_PATH + "/{name}", include_in_schema=False, response_model=None)
    async def asset(name: str, request: Request) -> Response:
        found = ASSETS.get(name)
        if found is None:
            raise HTTPException(404, f"No docs asset named {name!r}.")
        headers = {"ETag": _ETAGS[name], "Cache-Control": "no-cache"}
        if request.headers.get("if-none-match") == _ETAGS[name]:
            return Response(status_code=304, headers=headers)
        return FileResponse(ASSETS_DIR / found.path, media_type=found.media_type, headers=headers)
