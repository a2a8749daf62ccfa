"""The web dashboard at `/`: static files from the package, no build step and nothing from a CDN. The page signs in
with an API key and then uses the public API like any client, so it needs no route of its own beyond its files."""

from __future__ import annotations

import hashlib
from importlib import resources

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS = "/dashboard/assets"


def install_dashboard(app: FastAPI) -> None:
    static = resources.files("oasis.dashboard").joinpath("static")
    app.mount(ASSETS, StaticFiles(directory=str(static)), name="dashboard-assets")
    page = static.joinpath("index.html").read_text(encoding="utf-8")
    for asset in ("app.js", "style.css"):
        # a version per content: a browser never pairs a new page with an old script from its cache
        digest = hashlib.sha256(static.joinpath(asset).read_bytes()).hexdigest()[:12]
        page = page.replace(f"{{{asset}}}", digest)

    @app.get("/", include_in_schema=False)
    async def dashboard() -> HTMLResponse:
        # no-store: a new version of oasis is picked up on the next visit
        return HTMLResponse(page, headers={"cache-control": "no-store"})
