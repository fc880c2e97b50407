"""Over-the-air installs over HTTP: the installer (lifecycle/ota/) driven by a second front end.

    POST /v1/installs                    {"id", "sha256", "size"[, "activate", "chunk_bytes", "url"]}
    PUT  /v1/installs/{job}/chunks/{n}   the bundle's bytes [n·chunk_bytes, (n+1)·chunk_bytes)
    GET  /v1/installs/{job}              the job's status, with its outcome once final

The fields are checked as an MQTT ``install`` request's are (``install_spec``), the job is the
same job (same records, checks, switch between requests, recovery after a kill), and its
status is also published on MQTT's retained ``jobs`` topic. A client uploads the chunks in any
order (again after a broken connection: a chunk already in is accepted and ignored) and polls
the status; with ``url`` the device fetches the bundle itself (``limits.ota_url_installs``).
Reference: docs/http.md, "Installs".
"""
from __future__ import annotations

from typing import Any

from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response

from ...contract import JobState
from ...errors import BadRequest
from ...lifecycle.ota import Installer
from ...lifecycle.ota.job import INSTALL_FIELDS, install_spec
from ...lifecycle.ota.receive import chunk_size
from ..payload import decode_json
from .common import read_body

__all__ = ["InstallRoutes"]


class InstallRoutes:
    def __init__(self, installer: Installer, max_bytes: int):
        self.installer, self.max_bytes = installer, max_bytes

    def routes(self) -> list[tuple[str, Any, str]]:
        return [("/v1/installs", self.create, "POST"), ("/v1/installs/{job}", self.show, "GET"),
                ("/v1/installs/{job}/chunks/{n}", self.chunk, "PUT")]

    async def create(self, request: HttpRequest) -> Response:
        data = decode_json(await read_body(request, self.max_bytes))
        if not isinstance(data, dict):
            raise BadRequest(f"install: the body must be a JSON object, got {type(data).__name__}")
        job = data.get("id")
        if not isinstance(job, str):
            raise BadRequest("install: 'id' is required: the job's name, 1-64 of A-Z a-z 0-9 _ -")
        unknown = sorted(set(data) - INSTALL_FIELDS - {"id"})
        if unknown:
            raise BadRequest(f"install: unknown field {unknown[0]!r}")
        self.installer.submit(job, install_spec(data, job), {})  # no reply address: the client polls
        return JSONResponse(self.installer.status(job), 202)

    async def show(self, request: HttpRequest) -> Response:
        return JSONResponse(self.installer.status(request.path_params["job"]))

    async def chunk(self, request: HttpRequest) -> Response:
        job_id, n = request.path_params["job"], request.path_params["n"]
        status = self.installer.status(job_id)
        if not (n.isascii() and n.isdigit()) or int(n) >= status["chunks"]:
            raise BadRequest(f"install {job_id}: chunk {n!r} is not one of 0..{status['chunks'] - 1}")
        job = self.installer.jobs[job_id]
        if job.spec.url:
            raise BadRequest(f"install {job_id}: the device fetches this bundle from its URL itself")
        expected = chunk_size(job, int(n))
        data = await read_body(request, expected)
        if len(data) != expected:
            raise BadRequest(f"install {job_id}: chunk {n} must be {expected} bytes, got {len(data)}")
        if status["state"] not in (JobState.QUEUED, JobState.DOWNLOADING):
            return JSONResponse(status, 409)  # finished, or every chunk is in: nothing to take
        self.installer.receive(job_id, int(n), data)
        return JSONResponse(self.installer.status(job_id))
