"""The Open Inference Protocol (v2, REST), the common interface of model servers (KServe,
Triton, MLServer), for the model that /predict answers with, so their clients work unchanged.

    GET  /v2                           server metadata
    GET  /v2/health/live, /v2/health/ready
    GET  /v2/models/{name}             model metadata: its inputs and outputs
    GET  /v2/models/{name}/ready
    POST /v2/models/{name}/infer       a batch of impressions, as columns -> `probability`

The inputs are /predict's fields as columns of one shape [n]: `user_id`, `item_id`,
`item_genres` (BYTES, the genres of an item joined by commas), `position` (INT64), and optionally
`device` (BYTES). An error is 400 (404 for another model) with `{"error": "..."}`, as the
protocol says.
"""
from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError

from serving import api
from serving.service import NoModel, Service, of_request

INPUTS = {"user_id": "BYTES", "item_id": "BYTES", "item_genres": "BYTES", "position": "INT64", "device": "BYTES"}
OPTIONAL = {"device", "item_genres"}


class Tensor(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list[Any]
    parameters: dict | None = None


class InferenceRequest(BaseModel):
    id: str | None = Field(default=None, max_length=256)
    inputs: list[Tensor] = Field(min_length=1, max_length=len(INPUTS))
    outputs: list[dict] | None = None
    parameters: dict | None = None


class OIPError(Exception):
    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def router(model: str) -> APIRouter:
    routes = APIRouter(prefix="/v2", tags=["Open Inference Protocol v2"])

    @routes.get("")
    async def server_metadata():
        return {"name": "streamml", "version": "0.1.0", "extensions": []}

    @routes.get("/health/live")
    async def live():
        return {"live": True}

    @routes.get("/health/ready")
    async def ready(svc: Annotated[Service, Depends(of_request)]):
        return _ready(svc.live.get(model) is not None)

    @routes.get("/models/{name}")
    async def model_metadata(name: str, svc: Annotated[Service, Depends(of_request)]):
        _check_name(name, model)
        served = svc.live.get(model)
        return {"name": model, "versions": [str(served.version.version)] if served else [], "platform": "river",
                "inputs": [{"name": n, "datatype": t, "shape": [-1]} for n, t in INPUTS.items()],
                "outputs": [{"name": "probability", "datatype": "FP64", "shape": [-1]}]}

    @routes.get("/models/{name}/ready")
    async def model_ready(name: str, svc: Annotated[Service, Depends(of_request)]):
        _check_name(name, model)
        return _ready(svc.live.get(model) is not None)

    @routes.post("/models/{name}/infer")
    async def infer(name: str, body: InferenceRequest, svc: Annotated[Service, Depends(of_request)]):
        _check_name(name, model)
        try:
            done = svc.predict(_rows(body.inputs))
        except NoModel as e:
            raise OIPError(str(e), 503)
        # The impressions are logged under the server's own request id (a client's `id` need not
        # be unique): row i as `<request_id>-<i>`, row 0 as `<request_id>`.
        return {"model_name": model, "model_version": str(done.version.version), "id": body.id,
                "parameters": {"request_id": done.request_id},
                "outputs": [{"name": "probability", "shape": [len(done.probabilities)], "datatype": "FP64",
                             "data": done.probabilities}]}

    return routes


async def oip_error(request: Request, e: OIPError):
    return JSONResponse({"error": str(e)}, status_code=e.status)


def _ready(ready: bool):
    return JSONResponse({"ready": ready}, status_code=200 if ready else 503)


def _check_name(name: str, model: str):
    if name != model:
        raise OIPError(f"unknown model {name!r}: this server serves {model!r}", 404)


def _rows(inputs: list[Tensor]) -> list[dict]:
    """The tensors as /predict requests, each checked as /predict checks its body."""
    columns = {}
    for tensor in inputs:
        if tensor.name not in INPUTS:
            raise OIPError(f"unknown input {tensor.name!r}; inputs: {', '.join(INPUTS)}")
        if tensor.datatype != INPUTS[tensor.name]:
            raise OIPError(f"input {tensor.name!r} has datatype {tensor.datatype}, expected {INPUTS[tensor.name]}")
        if len(tensor.shape) != 1 or tensor.shape[0] != len(tensor.data):
            raise OIPError(f"input {tensor.name!r}: shape {tensor.shape} does not fit its {len(tensor.data)} values")
        columns[tensor.name] = tensor.data
    missing = set(INPUTS) - OPTIONAL - set(columns)
    if missing:
        raise OIPError(f"missing inputs: {', '.join(sorted(missing))}")
    if len({len(c) for c in columns.values()}) != 1:
        raise OIPError("inputs of different lengths")
    rows = []
    for i in range(len(columns["user_id"])):
        row = {name: values[i] for name, values in columns.items()}
        row["item_genres"] = [g for g in str(row.get("item_genres") or "").split(",") if g]
        try:
            rows.append(api.PredictRequest(**row).model_dump())
        except ValidationError as e:
            raise OIPError(f"row {i}: " + "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}"
                                                    for err in e.errors()))
    return rows
