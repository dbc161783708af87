"""KServe v2 over gRPC: the ``inference.GRPCInferenceService`` of the KServe / Triton protocol, on grpcio's
asyncio server, sharing the HTTP server's state: the dynamic batcher, auth, metrics and error mapping.

The messages and service come from the protocol's own proto, as compiled in ``tritonclient.grpc``
(``service_pb2``), so the stock ``tritonclient.grpc`` client works unmodified, raw tensor contents and
the classification extension included.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import Awaitable, Callable

import grpc
import numpy as np
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from resnet_edge.errors import InvalidInput, ToolkitError
from runtime.serving.app import ServerState
from runtime.serving.dataplane import VERSION
from runtime.serving.errors import Overloaded, status_of
from runtime.serving.protocol import (
    InferRequest,
    check_finite,
    check_input,
    classify_strings,
    one_output,
    requested_output,
)

log = logging.getLogger("resnet_edge.serve")


# The HTTP table's statuses (runtime.serving.errors), as gRPC codes.
CODES = {400: grpc.StatusCode.INVALID_ARGUMENT, 401: grpc.StatusCode.UNAUTHENTICATED, 404: grpc.StatusCode.NOT_FOUND,
         413: grpc.StatusCode.RESOURCE_EXHAUSTED, 503: grpc.StatusCode.UNAVAILABLE,
         504: grpc.StatusCode.DEADLINE_EXCEEDED, 500: grpc.StatusCode.INTERNAL}


def parse_grpc_infer(request, spec, max_batch: int) -> InferRequest:
    """A ModelInferRequest -> the same InferRequest the HTTP path builds; every problem is an InvalidInput."""
    if len(request.inputs) != 1:
        raise InvalidInput(f"The model takes one input ('{spec.input_name}'), not {len(request.inputs):,}.")
    inp = request.inputs[0]
    shape = check_input(inp.name, inp.datatype, [int(d) for d in inp.shape], spec, max_batch)
    count = int(np.prod(shape))
    if request.raw_input_contents:
        if len(request.raw_input_contents) != 1:
            raise InvalidInput(f"raw_input_contents holds {len(request.raw_input_contents)} tensors; the model takes 1.")
        raw = request.raw_input_contents[0]
        if len(raw) != count * 4:
            raise InvalidInput(f"raw_input_contents holds {len(raw)} bytes; shape {shape} needs {count * 4} "
                               "bytes of FP32.")
        batch = np.frombuffer(raw, dtype="<f4").reshape(shape)
    else:
        values = inp.contents.fp32_contents
        if len(values) != count:
            raise InvalidInput(f"fp32_contents holds {len(values)} values; shape {shape} needs {count}.")
        batch = np.asarray(values, dtype=np.float32).reshape(shape)
    check_finite(batch)
    one_output(len(request.outputs), spec)
    outputs = []
    for out in request.outputs or []:
        k = 0
        if "classification" in out.parameters:
            param = out.parameters["classification"]
            if param.WhichOneof("parameter_choice") != "int64_param":  # strict, as the HTTP front end
                raise InvalidInput("The 'classification' parameter must be an integer (int64_param).")
            k = param.int64_param
        outputs.append(requested_output(out.name, int(k), True, spec))
    if not outputs:
        outputs.append(requested_output(spec.output_name, 0, True, spec))
    return InferRequest(request.id or None, np.ascontiguousarray(batch, dtype=np.float32), tuple(outputs))


def build_grpc_response(req: InferRequest, logits: np.ndarray, model: str, labels: tuple[str, ...]):
    """Outputs as raw_output_contents: little-endian FP32, or length-prefixed strings for classification."""
    response = pb.ModelInferResponse(model_name=model, model_version=VERSION, id=req.id or "")
    for out in req.outputs:
        tensor = response.outputs.add(name=out.name)
        if out.classification:
            strings = classify_strings(logits, out.classification, labels)
            tensor.datatype, tensor.shape[:] = "BYTES", [len(strings), out.classification]
            response.raw_output_contents.append(
                b"".join(struct.pack("<I", len(s.encode())) + s.encode() for row in strings for s in row))
        else:
            tensor.datatype, tensor.shape[:] = "FP32", list(logits.shape)
            response.raw_output_contents.append(np.ascontiguousarray(logits, dtype="<f4").tobytes())
    return response


class InferenceService(pb_grpc.GRPCInferenceServiceServicer):
    """The servicer; methods not defined here answer UNIMPLEMENTED. Each method checks auth and
    readiness, maps errors to gRPC codes with one sentence, and counts itself in the shared metrics."""

    def __init__(self, state: ServerState) -> None:
        self.state = state

    async def _call(self, name: str, context, fn: Callable[[], Awaitable], *, public: bool = False, counted=False):
        plane, t0 = self.state.plane, time.perf_counter()
        code = "OK"
        try:
            async with plane.call(counted=counted):
                if not public:
                    plane.authorize(dict(context.invocation_metadata()).get("authorization"),
                                    "'authorization: Bearer <api key>' metadata")
                return await fn()
        except ToolkitError as exc:
            grpc_code = CODES.get(status_of(exc), grpc.StatusCode.INTERNAL)
            code = grpc_code.name
            await context.abort(grpc_code, str(exc))
        except asyncio.CancelledError:  # the client went away: the batcher drops its work
            code = "CANCELLED"
            raise
        except grpc.aio.AbortError:
            raise
        except Exception:
            log.exception("grpc %s failed", name)
            code = "INTERNAL"
            await context.abort(grpc.StatusCode.INTERNAL, "Internal server error; see the server log.")
        finally:
            plane.record(f"grpc_{name}", code, t0)

    # -- GRPCInferenceService ---------------------------------------------------------------------
    async def ServerLive(self, request, context):  # noqa: N802 - the protocol's method names
        async def run():
            return pb.ServerLiveResponse(live=True)
        return await self._call("live", context, run, public=True)

    async def ServerReady(self, request, context):  # noqa: N802
        async def run():
            return pb.ServerReadyResponse(ready=self.state.plane.ready)
        return await self._call("ready", context, run, public=True)

    async def ModelReady(self, request, context):  # noqa: N802
        async def run():
            self.state.plane.model(request.name, request.version)
            return pb.ModelReadyResponse(ready=self.state.plane.ready)
        return await self._call("model_ready", context, run)

    async def ServerMetadata(self, request, context):  # noqa: N802
        async def run():
            return pb.ServerMetadataResponse(**self.state.plane.server_metadata())
        return await self._call("server_metadata", context, run)

    async def ModelMetadata(self, request, context):  # noqa: N802
        async def run():
            self.state.plane.model(request.name, request.version)
            meta = self.state.plane.model_metadata()
            tensor = pb.ModelMetadataResponse.TensorMetadata
            return pb.ModelMetadataResponse(
                name=meta["name"], versions=meta["versions"], platform=meta["platform"],
                inputs=[tensor(**t) for t in meta["inputs"]], outputs=[tensor(**t) for t in meta["outputs"]])
        return await self._call("model_metadata", context, run)

    async def ModelInfer(self, request, context):  # noqa: N802
        async def run():
            state = self.state
            state.plane.model(request.model_name, request.model_version)
            state.plane.require_loaded()  # before parsing the tensor
            size = request.ByteSize()  # held until the answer is built, against the same budget as HTTP bodies
            if state.buffered + size > state.max_buffered_bytes:
                raise Overloaded("The server is holding too many request bodies at once; retry shortly.")
            state.buffered += size
            try:
                req = parse_grpc_infer(request, state.spec, state.max_batch_size)
                logits = await state.plane.infer(req.batch)
                return build_grpc_response(req, logits, state.model_name, state.spec.class_names)
            finally:
                state.buffered -= size
        return await self._call("infer", context, run, counted=True)


async def start_grpc(state: ServerState, host: str, port: int):
    """Start the gRPC server on the running event loop; returns it (``await server.stop(grace)`` to end)."""
    # the HTTP server's bounds: as many calls in progress as HTTP connections, messages no larger than a body
    server = grpc.aio.server(maximum_concurrent_rpcs=state.max_connections,
                             options=[("grpc.max_receive_message_length", state.max_body_bytes),
                                      ("grpc.max_send_message_length", state.max_body_bytes),
                                      ("grpc.max_metadata_size", state.max_head_bytes)])
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceService(state), server)
    if server.add_insecure_port(f"{host}:{port}") == 0:
        raise InvalidInput(f"Cannot listen for gRPC on {host}:{port}.")
    await server.start()
    return server
