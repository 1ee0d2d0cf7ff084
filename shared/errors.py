"""One exception hierarchy for mesh and southbound failures: transient or final.

Mesh failures follow httpx's shape (one base, the answer's details on the exception) so a
caller branches on attributes, never on the text::

    MeshError                 .agent .task_type .status .code
    ├── MeshUnavailable       not reached, or still failing transiently after every retry
    ├── PeerError             the peer answered a final 4xx/5xx: .code .message .detail
    └── PeerAnswerInvalid     the peer answered 200 with a result its contract does not allow

    SouthboundError           .transient: CNC/PCA refused or could not be reached
    └── SouthboundNotFound    the object does not exist (409 data-missing, 404)
"""

from __future__ import annotations

from typing import Any


class CxmError(Exception):
    """Base of every error CXM raises on purpose."""


class MeshError(CxmError):
    """A call to a peer agent failed.

    ``status`` is the HTTP status of the peer's last answer and ``code`` the error code it gave
    (``{"detail": {"code": ...}}``), when it answered at all.
    """

    def __init__(
        self,
        agent: str,
        task_type: str,
        message: str,
        status: int | None = None,
        *,
        code: str | None = None,
    ):
        super().__init__(f"{agent}/{task_type}: {message}")
        self.agent = agent
        self.task_type = task_type
        self.status = status
        self.code = code


class MeshUnavailable(MeshError):
    """The peer could not be reached or kept failing transiently after every retry.

    When the last try got an answer (a 503, say), ``status`` and ``code`` are that answer's.
    """


class PeerError(MeshError):
    """The peer answered a final error (4xx, or a 5xx such as 502 it will not retry itself).

    ``code`` and ``message`` are the peer's own (``TaskFailed``'s code, ``southbound``,
    ``mesh``) when it sent ``{"detail": {"code", "message"}}``; ``code`` is None for answers
    without one (a 422 listing the invalid fields: those are in ``detail``).
    """

    def __init__(
        self,
        agent: str,
        task_type: str,
        status: int,
        detail: Any,
    ):
        code = message = None
        if isinstance(detail, dict):
            code = detail.get("code") if isinstance(detail.get("code"), str) else None
            message = detail.get("message") if isinstance(detail.get("message"), str) else None
        super().__init__(agent, task_type, f"HTTP {status}: {detail}", status, code=code)
        self.status: int = status
        self.detail = detail
        self.message: str = message if message is not None else str(detail)


class PeerAnswerInvalid(MeshError):
    """The peer answered 200 but its result does not validate against the contract's response
    model: the two sides disagree on the contract, and retrying cannot help."""

    def __init__(self, agent: str, task_type: str, model: str, errors: str, result: Any):
        super().__init__(agent, task_type, f"answer is not a valid {model}: {errors}", 200)
        self.result = result


class TaskFailed(CxmError):
    """A handler could not do its job; becomes a 422/502 answer with this message.

    ``problems`` (each ``{field, message}``) travel with the answer when one message cannot
    say everything wrong with a request (a runbook document with several bad steps).
    """

    def __init__(
        self,
        message: str,
        *,
        code: str = "task_failed",
        status: int = 422,
        problems: list[dict[str, Any]] | None = None,
    ):
        super().__init__(message)
        self.code = code
        self.status = status
        self.problems = problems


class SouthboundError(CxmError):
    """CNC or PCA answered with an error or could not be reached."""

    def __init__(self, message: str, *, transient: bool = False):
        super().__init__(message)
        self.transient = transient


class SouthboundNotFound(SouthboundError):
    """The controller says the object does not exist (RESTCONF 409 ``data-missing``, 404)."""

    def __init__(self, message: str):
        super().__init__(message, transient=False)
