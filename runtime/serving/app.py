"""The ASGI app: KServe v2 endpoints, /v1/classify, /metrics, auth, body limits and error mapping."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from resnet_edge.errors import InvalidInput, ToolkitError
from runtime.serving.body import read_body, submit, until_disconnected
from runtime.serving.dataplane import VERSION
from runtime.serving.errors import (
    ClientGone,
    NotFound,
    status_of,
)
from runtime.serving.hosts import host_allowed, misdirected
from runtime.serving.pool import INLINE_BYTES, off_loop
from runtime.serving.protocol import HEADER, build_response, parse_infer, shown
from runtime.serving.state import ServerState

log = logging.getLogger("resnet_edge.serve")
Handler = Callable[[Request, ServerState], Awaitable[Response]]


def endpoint(name: str, *, public: bool = False, counted: bool = True) -> Callable[[Handler], Callable]:
    """Wrap a handler: the data plane's auth and accounting, errors -> JSON with the mapped status, one log line."""

    def wrap(fn: Handler):
        async def handler(request: Request) -> Response:
            state: ServerState = request.app.state.server
            plane = state.plane
            t0 = time.perf_counter()
            try:
                async with plane.call(counted=counted):
                    if not public:
                        plane.authorize(request.headers.get("authorization"))
                    response = await fn(request, state)
            except ToolkitError as exc:
                response = JSONResponse({"error": str(exc)}, status_code=status_of(exc))
                if response.status_code == 503:
                    response.headers["Retry-After"] = "1"
                if response.status_code == 401:
                    response.headers["WWW-Authenticate"] = "Bearer"
            except Exception:  # a bug, not bad input: logged with its traceback, answered in one sentence
                log.exception(json.dumps({"event": "error", "endpoint": name, "path": shown(request.url.path)}))
                response = JSONResponse({"error": "Internal server error; see the server log."}, status_code=500)
            finally:  # a body counts against --max-buffer-mb until its answer is made, not only while it is read
                state.buffered -= request.scope.pop("resnet_edge.held", 0)
            seconds = plane.record(name, response.status_code, t0)
            failed = response.status_code >= 400 and name not in ("ready", "model_ready")
            level = logging.WARNING if failed else logging.DEBUG
            if log.isEnabledFor(level):
                line = {"event": "request", "method": request.method, "path": shown(request.url.path),
                        "status": response.status_code, "ms": round(seconds * 1e3, 3)}
                if failed and response.media_type == "application/json":
                    line["error"] = json.loads(response.body).get("error")
                log.log(level, json.dumps(line))
            return response

        return handler

    return wrap


def _model(request: Request, state: ServerState) -> None:
    state.plane.model(request.path_params["model"], request.path_params.get("version"))


LIVE, READY = "/v2/health/live", "/v2/health/ready"


def probe(state: ServerState, path: str) -> tuple[str, int, bytes] | None:
    """(endpoint name, status, JSON body) for a health path, None for any other: the one answer to a probe,
    whether the app gives it or the HTTP protocol does (runtime.serving.probes)."""
    if path == LIVE:
        return "live", 200, b'{"live":true}'
    if path == READY:
        reason = state.plane.not_ready_reason()
        if reason is None:
            return "ready", 200, b'{"ready":true}'
        return "ready", 503, json.dumps({"ready": False, "reason": reason}).encode()
    return None


async def _health(request: Request, state: ServerState) -> Response:
    _, status, body = probe(state, request.url.path)
    return Response(body, status_code=status, media_type="application/json",
                    headers={"Retry-After": "1"} if status == 503 else None)


live = endpoint("live", public=True, counted=False)(_health)
ready = endpoint("ready", public=True, counted=False)(_health)


@endpoint("server_metadata", counted=False)
async def server_metadata(request: Request, state: ServerState) -> Response:
    return JSONResponse(state.plane.server_metadata())


@endpoint("model_metadata", counted=False)
async def model_metadata(request: Request, state: ServerState) -> Response:
    _model(request, state)
    return JSONResponse(state.plane.model_metadata())


@endpoint("repository_index", counted=False)
async def repository_index(request: Request, state: ServerState) -> Response:
    """Triton's repository extension (POST /v2/repository/index): the one model this server serves."""
    return JSONResponse(state.plane.repository_index())


@endpoint("model_ready", counted=False)
async def model_ready(request: Request, state: ServerState) -> Response:
    _model(request, state)
    ok = state.plane.ready
    return JSONResponse({"name": state.model_name, "ready": ok}, status_code=200 if ok else 503)


@endpoint("infer")
async def infer(request: Request, state: ServerState) -> Response:
    _model(request, state)
    state.plane.require_loaded()  # before reading the body
    body = await read_body(request, state)
    args = (body, request.headers.get(HEADER), state.spec, state.max_batch_size)
    large = len(body) > INLINE_BYTES
    req = await off_loop(parse_infer, *args) if large else parse_infer(*args)
    logits = await submit(request, state, req.batch)
    args = (req, logits, state.model_name, VERSION, state.spec.class_names)
    payload, headers = await off_loop(build_response, *args) if large else build_response(*args)
    return Response(payload, headers=headers)


@endpoint("classify")
async def classify(request: Request, state: ServerState) -> Response:
    from runtime.predict import top_k
    from runtime.preprocess import check_invert, decode, preprocess

    state.plane.require_loaded()
    try:
        k = int(request.query_params.get("k", "3"))
    except ValueError:
        raise InvalidInput("Query parameter k must be an integer.") from None
    if not 1 <= k <= state.spec.num_classes:
        raise InvalidInput(f"Query parameter k must be in 1..{state.spec.num_classes}.")
    invert = check_invert(request.query_params.get("invert", "no"))
    body = await read_body(request, state)
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        body = await _multipart_file(request, body)
    if not body:
        raise InvalidInput("Send an image: a PNG/JPEG/.npy body, or a multipart form with a file field.")
    with state.watchdog.watch(lambda: until_disconnected(request.receive)) as gone:
        try:
            x = await off_loop(lambda: preprocess([decode(body, "The uploaded image", state.spec.channels)], state.spec,
                                                  invert), request=request)
        except asyncio.CancelledError:
            if gone():
                raise ClientGone("The client disconnected before its image was decoded; the decode was dropped.") \
                    from None
            raise
    logits = await submit(request, state, x)
    (top,) = top_k(logits, k, state.spec.class_names)
    return JSONResponse({"model_name": state.model_name,
                         "predictions": [{"label": p.label, "index": p.index, "probability": p.probability} for p in top]})


async def _multipart_file(request: Request, body: bytes) -> bytes:
    from starlette.datastructures import UploadFile
    from starlette.exceptions import HTTPException
    from starlette.formparsers import MultiPartException

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, receive).form()
    except HTTPException as exc:  # Starlette's form() turns a MultiPartException into a 400 of its own
        raise InvalidInput(f"The multipart body is malformed ({exc.detail.rstrip('.')}).") from None
    except (MultiPartException, ValueError, KeyError, UnicodeError) as exc:
        raise InvalidInput(f"The multipart body is malformed ({str(exc).rstrip('.') or type(exc).__name__}).") from None
    files = [v for v in form.values() if isinstance(v, UploadFile)]
    if not files:
        raise InvalidInput("The multipart form has no file field.")
    return await files[0].read()


@endpoint("metrics")
async def metrics(request: Request, state: ServerState) -> Response:
    body, content_type = state.metrics.exposition(state.batcher.depth)
    return Response(body, media_type=content_type)


@endpoint("not_found", counted=False)
async def not_found(request: Request, state: ServerState) -> Response:
    raise NotFound(f"No route {request.method} {shown(request.url.path)}.")


_INFER_PATH = re.compile(r"/v2/models/([^/]+)(?:/versions/([^/]+))?/infer")


class App:
    """The ASGI app: infer calls go straight to their handler; everything else through Starlette's router.

    Infer is nearly every request under load, and Starlette's router and its two exception middlewares cost
    about as much event-loop time per request as the handler itself: skipping them for this one route lets
    the loop turn over sooner, so that health checks queued behind a burst of 64 requests answer sooner."""

    def __init__(self, router: Starlette) -> None:
        self.router, self.state = router, router.state

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and not host_allowed(self.state.server, scope):
            self.state.server.metrics.request("misdirected", 421, 0.0)
            await misdirected(scope, send, self.state.server)
        elif scope["type"] == "http" and scope["method"] == "POST" and (m := _INFER_PATH.fullmatch(scope["path"])):
            scope["app"] = self.router
            scope["path_params"] = {"model": m[1]} if m[2] is None else {"model": m[1], "version": m[2]}
            response = await infer(Request(scope, receive))
            await response(scope, receive, send)
        else:
            await self.router(scope, receive, send)


def create_app(state: ServerState, lifespan=None) -> App:
    m = "/v2/models/{model}"
    routes = [
        Route(LIVE, live), Route(READY, ready), Route("/v2", server_metadata),
        Route(m, model_metadata), Route(m + "/versions/{version}", model_metadata),
        Route("/v2/repository/index", repository_index, methods=["POST"]),
        Route(m + "/ready", model_ready), Route(m + "/versions/{version}/ready", model_ready),
        Route(m + "/infer", infer, methods=["POST"]), Route(m + "/versions/{version}/infer", infer, methods=["POST"]),
        Route("/v1/classify", classify, methods=["POST"]), Route("/metrics", metrics),
        Route("/{path:path}", not_found, methods=["GET", "POST", "PUT", "DELETE"]),
    ]
    router = Starlette(routes=routes, lifespan=lifespan)
    router.state.server = state
    return App(router)
