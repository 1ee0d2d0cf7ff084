"""What the lab's routers share: the lab dependency, error answers, injected faults.

Errors are raised as :class:`LabError` and rendered by the app in the body format of the API
they belong to: RESTCONF ``ietf-restconf:errors`` (CNC), a bare ``errors`` document (CNC's CAT
inventory), JSON:API ``errors`` (PCA), CNC's plain-text ``Unauthorized request``, or nothing at
all (CNC's empty-body 500 on malformed operation input).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from services.lab.controller import Lab
from services.lab.network import LabNetwork

YANG_JSON = "application/yang-data+json"


def get_lab(request: Request) -> Lab:
    lab: Lab = request.app.state.lab
    return lab


LabDep = Annotated[Lab, Depends(get_lab)]


class LabError(Exception):
    """An answer other than 2xx: a JSON document, plain text, or an empty body (``None``)."""

    def __init__(
        self,
        status: int,
        body: dict[str, Any] | str | None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(f"{status} {body!r}")
        self.status = status
        self.body = body
        self.headers = headers or {}

    def response(self) -> Response:
        if self.body is None:
            return Response(status_code=self.status, headers=self.headers)
        if isinstance(self.body, str):
            return PlainTextResponse(self.body, status_code=self.status, headers=self.headers)
        return JSONResponse(self.body, status_code=self.status, headers=self.headers)


def restconf_error(status: int, message: str, tag: str = "operation-failed") -> LabError:
    """RFC 8040 ``ietf-restconf:errors``, which is what CNC and its NSO proxy answer with."""
    return LabError(
        status,
        {
            "ietf-restconf:errors": {
                "error": [{"error-type": "application", "error-tag": tag, "error-message": message}]
            }
        },
    )


def data_missing(what: str) -> LabError:
    """409 ``data-missing``: CNC's answer for an object that does not exist."""
    return restconf_error(409, f"{what} does not exist", "data-missing")


def cat_data_missing(what: str) -> LabError:
    """The CAT inventory's bare ``errors`` document for a missing object."""
    return LabError(
        409,
        {
            "errors": {
                "error": [
                    {
                        "error-type": "application",
                        "error-tag": "data-missing",
                        "error-message": f"{what} does not exist",
                    }
                ]
            }
        },
    )


def pca_error(status: int, detail: str) -> LabError:
    """JSON:API ``errors``, which is what PCA answers with."""
    return LabError(status, {"errors": [{"status": str(status), "detail": detail}]})


def injected(
    network: LabNetwork, operation: str, *, kind: str = "restconf", empty_500: bool = False
) -> None:
    """Fail this call if a fault with an HTTP status ≥ 400 is pending for ``operation``.

    ``kind`` picks the body (``restconf``, ``cat``, ``pca``, ``text``); with ``empty_500`` a
    non-transient 500 has CNC's empty body of bad input.
    """
    fault = network.faults.get(operation)
    if fault is None or fault.status < 400:
        return
    network.take_fault(operation)
    if empty_500 and fault.status == 500 and not fault.transient:
        raise LabError(500, None)
    if kind == "pca":
        raise pca_error(fault.status, fault.message)
    if kind == "text":
        raise LabError(fault.status, fault.message)
    if kind == "cat":
        raise LabError(
            fault.status,
            {
                "errors": {
                    "error": [
                        {
                            "error-type": "application",
                            "error-tag": "operation-failed",
                            "error-message": fault.message,
                        }
                    ]
                }
            },
        )
    raise restconf_error(fault.status, fault.message)


def yang(body: dict[str, Any], status: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status, media_type=YANG_JSON)
