"""The live dashboard: `GET /dashboard`, a page of charts that the server keeps up to date.

    GET /dashboard            the page (serving/static/dashboard.html; uPlot, vendored: nothing
                              is loaded from another host)
    GET /dashboard/static/F   its scripts and styles
    GET /dashboard/stream     server-sent events: `history` (the snapshots kept) once, then
                              `snapshot` each time the board takes one (`serving.board`)

The page shows what `/metrics` reports, from the same snapshots (each has its `seq`).
"""
from __future__ import annotations

import asyncio
import json
import math
import pathlib

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, StreamingResponse

STATIC = pathlib.Path(__file__).parent / "static"
FILES = {p.relative_to(STATIC).as_posix(): p for p in STATIC.rglob("*") if p.is_file()}
TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html"}
POLL_S = 0.1  # how often a stream looks for a newer snapshot


def router() -> APIRouter:
    routes = APIRouter()

    @routes.get("/dashboard", response_class=HTMLResponse, include_in_schema=False)
    async def page():
        return HTMLResponse((STATIC / "dashboard.html").read_text())

    @routes.get("/dashboard/static/{name:path}", include_in_schema=False)
    async def static(name: str):
        path = FILES.get(name)  # only the files shipped: no path leaves the folder
        if path is None:
            raise HTTPException(status_code=404, detail=f"no dashboard file {name!r}")
        return FileResponse(path, media_type=TYPES.get(path.suffix, "application/octet-stream"))

    @routes.get("/dashboard/stream", include_in_schema=False)
    async def stream(request: Request):
        board = request.app.state.service.board
        return StreamingResponse(_events(request, board), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    return routes


async def _events(request: Request, board):
    yield _sse("history", list(board.history))
    sent = board.current["seq"] if board.current else 0
    if board.current:
        yield _sse("snapshot", board.current)
    while not await request.is_disconnected():
        current = board.current
        if current is not None and current["seq"] != sent:
            sent = current["seq"]
            yield _sse("snapshot", current)
        await asyncio.sleep(POLL_S)


def _sse(event: str, data) -> str:
    return f"event: {event}\ndata: {json.dumps(_json(data), default=str, allow_nan=False)}\n\n"


def _json(value):
    """`value` with NaN and infinities as null (JSON has none: the page shows a figure not known)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json(v) for v in value]
    return value
