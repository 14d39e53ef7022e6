"""The web console (`web/`: TypeScript built by Vite into `api/console_build/`),
served by the API process: the page at `/`, its content-hashed files under
`/assets/`. The console's pages are hash routes (`/#/sessions/<id>`), so every
other path stays the API's, and nothing here appears in `/openapi.json`.

`make install` builds the files (`infra/install.sh`). Without them, `/` answers
a page saying how to build them and `serve` logs `console_not_built`."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import structlog
from fastapi import FastAPI
from fastapi.responses import FileResponse, HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

log = structlog.get_logger("console")
CONSOLE_DIR = Path(__file__).with_name("console_build")
# The page loads only its own files and talks only to this origin (ws: included).
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
       "media-src 'self' blob: mediastream:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
       "form-action 'self'; frame-ancestors 'none'")
PAGE_HEADERS = {"Cache-Control": "no-cache", "Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer"}
NOT_BUILT = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>AttendWise: console not built</title></head>
<body><h1>The web console is not built</h1>
<p>The API works (see <a href="/docs">/docs</a>), but the console's files are missing from
<code>{path}</code>.</p>
<p>Build them with <code>make install</code> (Node.js 20 and npm: <code>cd web &amp;&amp; npm ci &amp;&amp;
npm run build</code>), then reload this page.</p></body></html>
"""


class _Assets(StaticFiles):
    """Vite names each file after its content: a name never changes meaning."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers["Cache-Control"] = "public, max-age=31536000, immutable"
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


def mount_console(app: FastAPI, directory: Path = CONSOLE_DIR) -> None:
    """Serve the console from `directory` at `/` (add it after the API's routes)."""
    index = directory / "index.html"
    if not index.is_file():
        log.warning("console_not_built", path=str(directory), fix="run `make install` (builds web/ with npm)")

        def not_built() -> HTMLResponse:
            return HTMLResponse(NOT_BUILT.format(path=html.escape(str(directory))), status_code=503)

        app.add_api_route("/", not_built, methods=["GET", "HEAD"], include_in_schema=False)
        return

    def console() -> FileResponse:
        return FileResponse(index, media_type="text/html", headers=PAGE_HEADERS)

    app.add_api_route("/", console, methods=["GET", "HEAD"], include_in_schema=False)
    app.mount("/assets", _Assets(directory=directory / "assets", check_dir=False), name="console-assets")
