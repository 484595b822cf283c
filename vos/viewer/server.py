"""The live web viewer (aiohttp, on the engine's event loop): stream status, live overlays, prompts by clicking.

    GET  /                                the page (vos/viewer/page.html; plain HTML + JS)
    GET  /api/streams                     every stream: state, frames, frames/s, latency, objects, refusals
    GET  /api/streams/{id}/frame.jpg      the newest overlay picture
    GET  /api/streams/{id}/ws             WebSocket: a JSON line then the JPEG of each new overlay, newest only
    GET  /api/streams/{id}/frames/{n}.jpg stored results (`vos view`): frame n's overlay
    POST /api/streams/{id}/prompts        a prompt message, as on MQTT: 202 {"queued": ...} or 200 {"error": why}

Prompts go into the stream's `PromptInbox`, the one MQTT feeds: the same checks, limits and
refusals (a refusal made later, when the prompt is applied, is listed on the page). A refused
prompt is an answer, not an HTTP failure (status 200, as the errors topic answers on MQTT), so the
page logs no network errors for it; only an oversized body is an HTTP error (413). The viewer
never slows tracking: a frame's `write` only keeps it as the newest; overlays are drawn and
encoded in a thread, only while somebody watches, and a slow browser just skips frames.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import statistics
import time
from collections import deque
from importlib import resources
from typing import TYPE_CHECKING

import numpy as np
from aiohttp import WSMsgType, web

from vos.http_service import start_app
from vos.streams.messages import ErrorMessage, MaskMessage
from vos.streams.overlay import OverlayStyle, draw_overlay, encode_jpeg
from vos.streams.prompt_inbox import MAX_PROMPT_BYTES
from vos.streams.sources.base import Frame
from vos.viewer import WebSettings

if TYPE_CHECKING:
    from vos.engine.stream import StreamRunner
    from vos.viewer.review import ResultsView

TOKEN_COOKIE = "vos_token"
RECENT_ERRORS = 20  # refusals a stream's page lists
LATENCY_FRAMES = 20  # recent frames whose median latency the page shows


class StreamView:
    """One stream as the viewer sees it; a `Sink` whose `write` only keeps the newest frame."""

    def __init__(self, runner: StreamRunner, settings: WebSettings, style: OverlayStyle) -> None:
        self.runner = runner
        self.settings = settings
        self.style = style
        self.errors: deque[dict] = deque(maxlen=RECENT_ERRORS)
        self.watchers = 0
        self.jpeg: bytes | None = None
        self.meta: dict = {}
        self._latest: tuple[Frame, MaskMessage, np.ndarray] | None = None
        self._version = 0  # frames written
        self._rendered = 0  # the version `jpeg` shows
        self._changed = asyncio.Condition()
        self._render_lock = asyncio.Lock()
        self._dirty = asyncio.Event()
        runner.inbox.listeners.append(self._on_refusal)

    @property
    def stream(self) -> str:
        return self.runner.stream

    def _on_refusal(self, message: ErrorMessage, reply=None) -> None:
        self.errors.append({"error": message.error, "payload": message.payload, "time": time.time()})

    async def write(self, frame: Frame, message: MaskMessage, labels: np.ndarray) -> None:
        self._latest = (frame, message, labels)
        self._version += 1
        self._dirty.set()

    async def keep_drawing(self) -> None:
        """Runs until cancelled: draws each new frame while somebody watches (frames arriving meanwhile are skipped)."""
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            if self.watchers:
                await self.render()

    def _draw(self, frame: Frame, message: MaskMessage, labels: np.ndarray) -> bytes:
        """Blocking: the overlay as JPEG bytes."""
        scores = {o.id: o.score for o in message.objects}
        classes = {o.id: o.class_name for o in message.objects if o.class_name is not None}
        image = draw_overlay(frame.image, labels, scores, self.style, frame.index, self.runner.recent_fps, classes)
        return encode_jpeg(image, self.settings.jpeg_quality)

    async def render(self) -> None:
        """Draws the newest frame unless it is drawn already (in a thread) and wakes the WebSockets."""
        async with self._render_lock:
            if self._latest is None or self._rendered == self._version:
                return
            version, (frame, message, _labels) = self._version, self._latest
            self.jpeg = await asyncio.to_thread(self._draw, *self._latest)
            self.meta = {
                "stream": self.stream, "frame": frame.index, "width": message.width, "height": message.height,
                "objects": [{"id": o.id, "score": round(o.score, 3), "area": o.area} for o in message.objects],
            }  # fmt: skip
            self._rendered = version
        async with self._changed:
            self._changed.notify_all()

    async def wait_newer(self, seen: int) -> int:
        """Waits until a picture newer than version `seen` is drawn; its version."""
        async with self._changed:
            await self._changed.wait_for(lambda: self._rendered > seen)
            return self._rendered

    def summary(self) -> dict:
        stats = self.runner.stats()
        latencies = list(self.runner.report.latencies)[-LATENCY_FRAMES:]
        message = self._latest[1] if self._latest is not None else None
        return {
            "id": self.stream,
            "state": stats.state,
            "frames": stats.frames,
            "fps": stats.fps or None,
            "latency_ms": 1000 * statistics.median(latencies) if latencies else None,
            "frame": message.frame_index if message else None,
            "size": [message.width, message.height] if message else None,
            "objects": [{"id": o.id, "score": round(o.score, 3), "area": o.area} for o in message.objects] if message else [],
            "pending_prompts": stats.pending_prompts,
            "refused_prompts": stats.refused_prompts,
            "errors": list(self.errors),
        }


class WebViewer:
    """`async with WebViewer(settings) as viewer:` serves the page; `viewer.add_stream(runner)` gives a stream's sink.

    Entering binds the port (ConfigError if it cannot), so a wrong address fails before a model loads.
    """

    def __init__(self, settings: WebSettings, style: OverlayStyle = OverlayStyle()) -> None:
        self.settings = settings
        self.style = style
        self._token = settings.token_value()  # read once (ValueError if its file cannot be read)
        self.views: dict[str, StreamView | ResultsView] = {}
        self._drawing: list[asyncio.Task] = []
        self.port: int | None = None
        self._runner: web.AppRunner | None = None
        self._sockets: set[web.WebSocketResponse] = set()
        self.connected = asyncio.Event()  # set when a page first opens a stream's live feed

    @property
    def url(self) -> str:
        host = self.settings.host if ":" not in self.settings.host else f"[{self.settings.host}]"
        return f"http://{host}:{self.port}/"

    @property
    def address(self) -> str:
        """Where to point a browser, in words; with a token, how to give it (never the token itself)."""
        if self._token is None:
            return self.url
        return f"{self.url}?token=... (the viewer's token, from --web-token-file or $VOS_WEB__TOKEN; once per browser)"

    def add_stream(self, runner: StreamRunner) -> StreamView:
        view = StreamView(runner, self.settings, self.style)
        self.views[view.stream] = view
        self._drawing.append(asyncio.create_task(view.keep_drawing(), name=f"viewer-{view.stream}"))
        return view

    def add_results(self, view: ResultsView) -> ResultsView:
        """Stored results, paged through with a slider."""
        self.views[view.stream] = view
        return view

    async def __aenter__(self) -> WebViewer:
        app = web.Application(client_max_size=MAX_PROMPT_BYTES, middlewares=[self._check_token])
        app.add_routes([
            web.get("/", self._page),
            web.get("/api/streams", self._streams),
            web.get("/api/streams/{stream}/frame.jpg", self._frame),
            web.get("/api/streams/{stream}/ws", self._websocket),
            web.get("/api/streams/{stream}/frames/{index:[0-9]{1,9}}.jpg", self._stored_frame),
            web.post("/api/streams/{stream}/prompts", self._prompt),
        ])  # fmt: skip
        self._runner, self.port = await start_app(app, self.settings.host, self.settings.port, "the viewer")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for task in self._drawing:
            task.cancel()
        await asyncio.gather(*self._drawing, return_exceptions=True)
        for ws in list(self._sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- access ----------------------------------------------------------------------------------
    @web.middleware
    async def _check_token(self, request: web.Request, handler):
        if self._token is None:
            return await handler(request)
        expected = self._token.encode()
        given = request.query.get("token") or request.cookies.get(TOKEN_COOKIE) or ""
        bearer = request.headers.get("Authorization", "")
        if bearer.startswith("Bearer "):
            given = bearer[len("Bearer ") :]
        if not hmac.compare_digest(given.encode(), expected):
            raise web.HTTPUnauthorized(text="this viewer needs its token: open /?token=... (the token you started it with)")
        response = await handler(request)
        if "token" in request.query and isinstance(response, web.Response):
            response.set_cookie(TOKEN_COOKIE, given, httponly=True, samesite="Strict")
        return response

    def _view(self, request: web.Request, live: bool = True) -> StreamView | ResultsView:
        name = request.match_info["stream"]
        if name not in self.views:
            raise web.HTTPNotFound(text=f"no stream {name!r}; streams: {', '.join(self.views)}")
        view = self.views[name]
        if live != isinstance(view, StreamView):
            kind = "a live stream: its picture is /frame.jpg" if live is False else "stored results: /frames/N.jpg"
            raise web.HTTPNotFound(text=f"{name} is {kind}")
        return view

    # -- handlers --------------------------------------------------------------------------------
    async def _page(self, request: web.Request) -> web.Response:
        html = resources.files("vos.viewer").joinpath("page.html").read_text(encoding="utf-8")
        return web.Response(text=html, content_type="text/html")

    async def _streams(self, request: web.Request) -> web.Response:
        return web.json_response({"streams": [view.summary() for view in self.views.values()]})

    async def _frame(self, request: web.Request) -> web.Response:
        view = self._view(request)
        await view.render()
        if view.jpeg is None:
            raise web.HTTPNotFound(text=f"stream {view.stream} has no frame yet")
        return web.Response(body=view.jpeg, content_type="image/jpeg", headers={"Cache-Control": "no-store"})

    async def _stored_frame(self, request: web.Request) -> web.Response:
        view = self._view(request, live=False)
        try:
            jpeg = await view.picture(int(request.match_info["index"]))
        except IndexError as e:
            raise web.HTTPNotFound(text=str(e)) from None
        except ValueError as e:
            raise web.HTTPUnprocessableEntity(text=f"cannot draw this frame: {e}") from None
        return web.Response(body=jpeg, content_type="image/jpeg")

    async def _prompt(self, request: web.Request) -> web.Response:
        if getattr(self.views.get(request.match_info["stream"]), "stored", False):
            return web.json_response({"error": "stored results take no prompts: track the source with `vos track --web`"})
        view = self._view(request)
        if request.content_length is not None and request.content_length > MAX_PROMPT_BYTES:
            raise web.HTTPRequestEntityTooLarge(max_size=MAX_PROMPT_BYTES, actual_size=request.content_length)
        result = view.runner.inbox.submit(await request.read())
        if isinstance(result, ErrorMessage):
            return web.json_response({"error": result.error})
        return web.json_response({"queued": json.loads(result.model_dump_json(exclude_none=True))}, status=202)

    async def _websocket(self, request: web.Request) -> web.WebSocketResponse:
        view = self._view(request)
        ws = web.WebSocketResponse(heartbeat=20, compress=False)  # JPEGs do not deflate: no CPU on it
        await ws.prepare(request)
        self._sockets.add(ws)
        self.connected.set()
        view.watchers += 1
        sender = asyncio.create_task(self._send_pictures(view, ws))
        try:
            async for message in ws:  # the page sends nothing; this notices when it goes away
                if message.type == WSMsgType.ERROR:
                    break
        finally:
            view.watchers -= 1
            self._sockets.discard(ws)
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
        return ws

    @staticmethod
    async def _send_pictures(view: StreamView, ws: web.WebSocketResponse) -> None:
        await view.render()
        seen = 0
        with contextlib.suppress(ConnectionError):
            while not ws.closed:
                seen = await view.wait_newer(seen)
                await ws.send_str(json.dumps(view.meta))
                await ws.send_bytes(view.jpeg)
