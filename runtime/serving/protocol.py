"""The Open Inference Protocol (KServe v2) as Triton speaks it: JSON tensors, the binary tensor
data extension and the classification extension. Pure functions from bytes to arrays and back."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from resnet_edge.errors import InvalidInput
from runtime.spec import ModelSpec

HEADER = "inference-header-content-length"

try:  # ten times faster than json on a tensor of floats: 64 JSON requests arriving at once stall the loop far less
    from orjson import dumps as _dumps
    from orjson import loads as _fast_loads
except ImportError:  # pragma: no cover - orjson is a dependency of the runtime
    _fast_loads = json.loads

    def _dumps(obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":")).encode()


ECHO_CHARS = 64  # the most of a request's own text an error message or a log line repeats


def shown(value: Any, limit: int = ECHO_CHARS) -> str:
    """A value from a request as an error message or a log line may repeat it: JSON-escaped, so that no lone
    surrogate, control character or newline survives, and cut to ``limit`` characters with its length said."""
    if isinstance(value, (list, tuple, dict)) and len(value) > 8:
        return f"a {type(value).__name__} of {len(value):,} items"
    try:
        text = json.dumps(value, ensure_ascii=True, default=lambda v: type(v).__name__)
    except (ValueError, RecursionError):  # an integer of thousands of digits, nesting past Python's stack
        return f"a {type(value).__name__} too large to show"
    if isinstance(value, str):
        text = f"'{text[1:-1]}'"
        if len(text) > limit:
            return f"{text[:limit]}...' ({len(value):,} characters)"
        return text
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def _loads(head: bytes) -> Any:
    try:
        return _fast_loads(head)
    except ValueError:  # orjson is strict (no NaN literals): the standard parser decides, and words the error
        try:
            return json.loads(head)
        except RecursionError:  # orjson stops at 1,024 levels; the standard parser recurses until Python does
            raise InvalidInput("The request body is JSON nested over 1,024 levels deep.") from None
        except json.JSONDecodeError:
            raise
        except ValueError:  # an integer literal past Python's 4,300-digit limit for int(str)
            raise InvalidInput("The request body holds a number with more digits than any tensor value has.") from None


def _text(value: Any, what: str) -> str:
    """A string field of a request: a JSON string that UTF-8 can carry (no lone surrogate), else 400."""
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be a string, not {shown(value)}.")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(f"{what} {shown(value)} is not valid Unicode (a lone surrogate).") from None
    return value


def _flag(params: dict, key: str, default: bool) -> bool:
    value = params.get(key, default)
    if not isinstance(value, bool):
        raise InvalidInput(f"The parameter '{key}' must be true or false, not {shown(value)}.")
    return value


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool
    classification: int = 0


@dataclass(frozen=True)
class InferRequest:
    id: str | None
    batch: np.ndarray
    outputs: tuple[RequestedOutput, ...]


def parse_infer(body: bytes, header_length: str | None, spec: ModelSpec, max_batch: int) -> InferRequest:
    """Parse a KServe v2 infer request (JSON, or JSON + binary tensors); every problem is an InvalidInput."""
    if header_length is not None:
        try:
            n = int(header_length)
        except ValueError:
            raise InvalidInput(f"Inference-Header-Content-Length {shown(header_length)} is not an integer.") from None
        if not 0 < n <= len(body):
            raise InvalidInput(f"Inference-Header-Content-Length {n} does not fit a body of {len(body)} bytes.")
        head, binary = body[:n], body[n:]
    else:
        head, binary = body, b""
    try:
        req = _loads(head)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"The request body is not valid JSON ({getattr(exc, 'msg', exc)}).") from None
    if not isinstance(req, dict) or not isinstance(req.get("inputs"), list) or not req["inputs"]:
        raise InvalidInput("The request needs an 'inputs' list with one tensor.")
    if len(req["inputs"]) != 1:
        raise InvalidInput(f"The model takes one input ('{spec.input_name}'), not {len(req['inputs']):,}.")
    inp = req["inputs"][0]
    if not isinstance(inp, dict):
        raise InvalidInput("Each input must be a JSON object.")
    shape = check_input(inp.get("name"), inp.get("datatype"), inp.get("shape"), spec, max_batch)
    count = int(np.prod(shape))
    params = _parameters(inp, "The input's")
    if "binary_data_size" in params:
        size = params["binary_data_size"]
        if type(size) is not int or size != count * 4 or len(binary) != size:
            raise InvalidInput(f"binary_data_size {shown(size)} and the {len(binary)} binary bytes do not match "
                               f"shape {shape} ({count * 4} bytes of FP32).")
        batch = np.frombuffer(binary, dtype="<f4").reshape(shape).astype(np.float32, copy=False)
    else:
        if binary:
            raise InvalidInput("Binary bytes follow the JSON header but no input declares binary_data_size.")
        batch = _numbers(inp.get("data"))
        if batch.size != count:
            raise InvalidInput(f"Input 'data' holds {batch.size} values; shape {shape} needs {count}.")
        batch = batch.reshape(shape)
    check_finite(batch)
    binary_default = _flag(_parameters(req, "The request's"), "binary_data_output", False)
    requested = req.get("outputs") or [{"name": spec.output_name}]
    if not isinstance(requested, list):
        raise InvalidInput("'outputs' must be a list of output objects.")
    one_output(len(requested), spec)
    (out,) = requested
    if not isinstance(out, dict):
        raise InvalidInput(f"Unknown output {shown(out)}; the model's output is '{spec.output_name}'.")
    p = _parameters(out, "An output's")
    output = requested_output(out.get("name"), p.get("classification", 0), _flag(p, "binary_data", binary_default),
                              spec)
    rid = req.get("id")
    return InferRequest(_text(rid, "The request 'id'") if rid is not None else None, np.ascontiguousarray(batch),
                        (output,))


def _numbers(data: Any) -> np.ndarray:
    """A JSON tensor's 'data' as float32: a (flat or nested) list of JSON numbers only; strings such as "1e0",
    booleans and nulls are refused, as Triton refuses them."""
    try:
        arr = np.asarray(data)
    except (ValueError, OverflowError, RecursionError):
        raise InvalidInput("Input 'data' must be a (flat or nested) list of numbers.") from None
    if arr.dtype.kind not in "iuf" or not isinstance(data, list):
        raise InvalidInput("Input 'data' must be a (flat or nested) list of numbers (no strings, booleans or "
                           "nulls).")
    with np.errstate(over="ignore"):
        return arr.astype(np.float32)


def one_output(n: int, spec: ModelSpec) -> None:
    """The model has one output: a request may name it once (each repetition would be computed and sent again)."""
    if n > 1:
        raise InvalidInput(f"The model has one output ('{spec.output_name}'); a request may ask for it once, not "
                           f"{n:,} times.")


def _parameters(obj: dict, whose: str) -> dict:
    params = obj.get("parameters") or {}
    if not isinstance(params, dict):
        raise InvalidInput(f"{whose} 'parameters' must be a JSON object.")
    return params


def check_input(name: Any, datatype: Any, shape: Any, spec: ModelSpec, max_batch: int) -> list[int]:
    """The one input tensor's name, datatype and shape, as every protocol checks them; returns the shape."""
    if name != spec.input_name:
        raise InvalidInput(f"Unknown input {shown(name)}; the model's input is '{spec.input_name}'.")
    if datatype != "FP32":
        raise InvalidInput(f"Input datatype must be FP32, not {shown(datatype)}.")
    c, h, w = spec.chw
    if not (isinstance(shape, list) and len(shape) == 4 and all(type(d) is int for d in shape)
            and shape[1:] == [c, h, w] and shape[0] >= 1):
        raise InvalidInput(f"Input shape must be [N, {c}, {h}, {w}], not {shown(shape)}.")
    if shape[0] > max_batch:
        raise InvalidInput(f"Batch size {shape[0]} exceeds the maximum of {max_batch}.")
    return shape


def check_finite(batch: np.ndarray) -> None:
    if not np.isfinite(batch).all():
        raise InvalidInput("Input contains NaN or Inf values.")


def requested_output(name: Any, k: Any, binary: bool, spec: ModelSpec) -> RequestedOutput:
    if name != spec.output_name:
        raise InvalidInput(f"Unknown output {shown(name)}; the model's output is '{spec.output_name}'.")
    if not isinstance(k, int) or isinstance(k, bool) or k < 0:
        raise InvalidInput(f"classification must be a non-negative integer, not {shown(k)}.")
    # as Triton: asking for more classes than exist returns them all
    return RequestedOutput(spec.output_name, binary, min(k, spec.num_classes))


def classify_strings(logits: np.ndarray, k: int, labels: tuple[str, ...]) -> list[list[str]]:
    """Top-k as Triton's classification extension formats them: '<value>:<index>:<label>'."""
    top = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    return [[f"{logits[i, j]:f}:{j}:{labels[j]}" for j in row] for i, row in enumerate(top)]


def build_response(req: InferRequest, logits: np.ndarray, model: str, version: str,
                   labels: tuple[str, ...]) -> tuple[bytes, dict[str, str]]:
    """The response body and headers: JSON, or JSON + binary tensors when any output asked for binary."""
    outputs, blobs = [], []
    for out in req.outputs:
        if out.classification:
            strings = classify_strings(logits, out.classification, labels)
            entry: dict[str, Any] = {"name": out.name, "datatype": "BYTES", "shape": [len(strings), out.classification]}
            if out.binary:
                blob = b"".join(struct.pack("<I", len(s.encode())) + s.encode() for row in strings for s in row)
                entry["parameters"] = {"binary_data_size": len(blob)}
                blobs.append(blob)
            else:
                entry["data"] = [s for row in strings for s in row]
        else:
            entry = {"name": out.name, "datatype": "FP32", "shape": list(logits.shape)}
            if out.binary:
                blob = np.ascontiguousarray(logits, dtype="<f4").tobytes()
                entry["parameters"] = {"binary_data_size": len(blob)}
                blobs.append(blob)
            else:
                entry["data"] = logits.ravel().tolist()
        outputs.append(entry)
    body: dict[str, Any] = {"model_name": model, "model_version": version, "outputs": outputs}
    if req.id is not None:
        body["id"] = req.id
    head = _dumps(body)
    if not blobs:
        return head, {"content-type": "application/json"}
    return head + b"".join(blobs), {"content-type": "application/octet-stream", HEADER: str(len(head))}
