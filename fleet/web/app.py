"""The fleet dashboard: a read-only Starlette app over a ``fleet.store.Store``, pages rendered
on the server with Jinja2 (no JavaScript, no build step).

Pages (GET only; an unknown scanner, result or client is a 404 page naming it):

- ``/``: the scanners: online/offline (retained status and last will), battery, firmware,
  bundle version, last seen, last error, results stored; a box to open a client's trend.
- ``/scanners/{id}``: one scanner's status, its results newest first (``?before_seq=N``: the
  page below seq N), its recent events; ``/scanners/{id}/results.csv``: all its results.
- ``/results/{msg_id}``: one result's figures, grades, quality, timings, session tags and the
  overlay thumbnail when the record carries one (``/results/{msg_id}/thumbnail.jpg``).
- ``/clients/{client_id}``: hair count, density and thin-hair ratio over the client's visits
  (inline SVG, one point per visit), the visits and their scans; ``.../results.csv``.

The store is not thread-safe: every read holds one lock (Starlette runs these plain handlers in
its thread pool).
"""

from __future__ import annotations

import csv
import io
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from fleet.store import TAG_COLUMNS, Store, StoredResult
from fleet.web import views
from fleet.web.plot import trend_svg

__all__ = ["PAGE_SIZE", "create_app"]

PAGE_SIZE = 25  # results per page of a scanner's stream
_HERE = Path(__file__).parent
_T = TypeVar("_T")
_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
_EXPORT_BASE = ["msg_id", "device_id", "seq", "captured_at", "received_at", "schema", "bundle_version",
                *TAG_COLUMNS, "quality_accepted"]  # fmt: skip


def create_app(store: Store, title: str = "ScalpEdge fleet") -> Starlette:
    """The dashboard over ``store`` (opened and closed by the caller). ``title``: page heading."""
    lock = threading.Lock()
    templates = Jinja2Templates(directory=str(_HERE / "templates"))
    env = templates.env
    env.filters.update(q=lambda s: quote(str(s), safe=""), utc=views.utc, ago=views.ago, battery=views.battery_text)
    env.globals.update(title=title, TREND_METRICS=views.TREND_METRICS, state_text=views.state_text)

    def read(fn: Callable[[], _T]) -> _T:
        with lock:
            return fn()

    def page(request: Request, name: str, status_code: int = 200, **context: Any) -> Response:
        return templates.TemplateResponse(request, name, context, status_code=status_code, headers=_HEADERS)

    def scanners(request: Request) -> Response:
        devices = read(store.devices)
        online = sum(d.online for d in devices)
        return page(request, "scanners.html", devices=devices, online=online)

    def scanner(request: Request) -> Response:
        device_id = request.path_params["device_id"]
        before = _int_param(request, "before_seq")
        device = read(lambda: store.device(device_id))
        if device is None:
            raise HTTPException(404, f"no scanner {device_id!r} in the store")
        rows = read(lambda: store.device_results(device_id, limit=PAGE_SIZE + 1, before_seq=before))
        more = len(rows) > PAGE_SIZE
        results = [views.ResultView.of(r) for r in rows[:PAGE_SIZE]]
        events = read(lambda: store.events(device_id, limit=10))
        next_seq = results[-1].stored.seq if more else None
        return page(request, "scanner.html", d=device, results=results, events=events, before=before, next_seq=next_seq)

    def result(request: Request) -> Response:
        stored = _result_or_404(request)
        view = views.ResultView.of(stored)
        return page(request, "result.html", r=view, rec=view.record, thumb=view.record.get("thumbnail"))

    def thumbnail(request: Request) -> Response:
        jpeg = views.thumbnail_jpeg(_result_or_404(request).record())
        if jpeg is None:
            raise HTTPException(404, "this result has no thumbnail (the scanner does not publish them)")
        return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "max-age=86400"})

    def _result_or_404(request: Request) -> StoredResult:
        msg_id = request.path_params["msg_id"]
        stored = read(lambda: store.result(msg_id))
        if stored is None:
            raise HTTPException(404, f"no result {msg_id!r} in the store")
        return stored

    def client_lookup(request: Request) -> Response:
        client_id = request.query_params.get("client_id", "").strip()
        if not client_id:
            raise HTTPException(400, "give a client id (the pseudonymous code of scalpedge session start)")
        return RedirectResponse(f"/clients/{quote(client_id, safe='')}", status_code=303)

    def client(request: Request) -> Response:
        client_id = request.path_params["client_id"]
        results = read(lambda: store.client_results(client_id))
        if not results:
            raise HTTPException(404, f"no results of client {client_id!r} in the store")
        visits = views.visits(results)
        labels = [v.visit_date for v in visits]
        plots = []
        for m in views.TREND_METRICS:
            values = [None if (x := v.means[m.key]) is None else x * m.scale for v in visits]
            plots.append(trend_svg(m.title, labels, values, m.unit, m.decimals))
        scans = [views.ResultView.of(r) for r in reversed(results)]
        return page(request, "client.html", client_id=client_id, visits=visits, plots=plots, scans=scans)

    def scanner_csv(request: Request) -> Response:
        device_id = request.path_params["device_id"]
        if read(lambda: store.device(device_id)) is None:
            raise HTTPException(404, f"no scanner {device_id!r} in the store")
        return _csv(read(lambda: store.export_rows(device=device_id)), f"{device_id}-results.csv")

    def client_csv(request: Request) -> Response:
        client_id = request.path_params["client_id"]
        rows = read(lambda: store.export_rows(client_id=client_id))
        if not rows:
            raise HTTPException(404, f"no results of client {client_id!r} in the store")
        return _csv(rows, f"{client_id}-results.csv")

    def error_page(request: Request, exc: Exception) -> Response:
        code = exc.status_code if isinstance(exc, HTTPException) else 500
        detail = exc.detail if isinstance(exc, HTTPException) else "internal error"
        if code == 404 and detail == "Not Found":
            detail = f"no page at {request.url.path}"
        return page(request, "error.html", status_code=code, code=code, detail=detail)

    routes = [
        Route("/", scanners),
        Route("/scanners/{device_id}", scanner),
        Route("/scanners/{device_id}/results.csv", scanner_csv),
        Route("/results/{msg_id}", result),
        Route("/results/{msg_id}/thumbnail.jpg", thumbnail),
        Route("/clients", client_lookup),
        Route("/clients/{client_id}", client),
        Route("/clients/{client_id}/results.csv", client_csv),
        Mount("/static", StaticFiles(directory=str(_HERE / "static")), name="static"),
    ]
    return Starlette(routes=routes, exception_handlers={HTTPException: error_page})


def _int_param(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise HTTPException(400, f"{name} must be an integer, got {raw!r}") from None


def _csv(rows: list[dict[str, Any]], filename: str) -> Response:
    """``rows`` (``Store.export_rows``) as CSV, one header line; empty cells for None."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]) if rows else _EXPORT_BASE, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
    disposition = f"attachment; filename*=UTF-8''{quote(filename, safe='')}"
    return Response(out.getvalue(), media_type="text/csv; charset=utf-8", headers={"Content-Disposition": disposition})
