"""The web dashboard at ``/dashboard``: static HTML + JavaScript that calls the ``/v1`` API
from the browser with a read key the person pastes in (kept in ``sessionStorage``).

The page itself holds no data, so it needs no key. Plotly.js is the copy that ships inside the
``plotly`` Python package, served from here (never a CDN: the page works offline); a
Content-Security-Policy keeps the page on this origin.
"""

from __future__ import annotations

import gzip
import hashlib
import threading
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, RedirectResponse, Response

DASHBOARD_DIR = Path(__file__).resolve().parent / "dashboard"
FILES = {"index.html": "text/html; charset=utf-8", "dashboard.js": "text/javascript; charset=utf-8",
         "dashboard.css": "text/css; charset=utf-8"}

# Plotly injects <style> elements and style attributes, hence 'unsafe-inline' for styles only;
# scripts and connections stay on this origin.
CSP = (
    "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


class _PlotlyJS:
    """plotly.min.js from the installed ``plotly`` package, read once and kept in memory (plain
    and gzipped); the package version is its ETag."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._body: bytes | None = None
        self._gz: bytes | None = None
        self.etag = ""

    def get(self) -> tuple[bytes, bytes, str]:
        with self._lock:
            if self._body is None:
                import plotly
                from plotly.offline import get_plotlyjs

                body = get_plotlyjs().encode()
                self._gz = gzip.compress(body, compresslevel=6, mtime=0)
                self.etag = f'"plotly-{plotly.__version__}-{hashlib.sha256(body).hexdigest()[:12]}"'
                self._body = body
            return self._body, self._gz, self.etag


def add_dashboard(app: FastAPI) -> None:
    """Serve the dashboard at ``/dashboard/`` (``/dashboard`` redirects there) and Plotly.js at
    ``/dashboard/plotly.min.js``."""
    plotly_js = _PlotlyJS()

    @app.get("/dashboard", include_in_schema=False)
    def dashboard_redirect() -> RedirectResponse:
        return RedirectResponse("/dashboard/", status_code=307)

    @app.get("/dashboard/plotly.min.js", include_in_schema=False)
    def dashboard_plotly(request: Request) -> Response:
        body, gz, etag = plotly_js.get()
        headers = {"Cache-Control": "public, max-age=604800", "ETag": etag, "Vary": "Accept-Encoding",
                   "X-Content-Type-Options": "nosniff"}
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        if "gzip" in request.headers.get("accept-encoding", ""):
            return Response(gz, media_type="text/javascript; charset=utf-8", headers={**headers, "Content-Encoding": "gzip"})
        return Response(body, media_type="text/javascript; charset=utf-8", headers=headers)

    @app.get("/dashboard/", include_in_schema=False)
    def dashboard_index() -> FileResponse:
        return _file("index.html")

    @app.get("/dashboard/{name}", include_in_schema=False)
    def dashboard_file(name: str) -> Response:
        if name not in FILES:
            return Response("not found", status_code=404, media_type="text/plain")
        return _file(name)


def _file(name: str) -> FileResponse:
    # no-cache: the browser revalidates (cheap, by ETag/Last-Modified), so an upgrade shows at once
    return FileResponse(DASHBOARD_DIR / name, media_type=FILES[name], headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"})
