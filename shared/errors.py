"""One exception hierarchy for mesh and southbound failures: transient or final."""

from __future__ import annotations


class CxmError(Exception):
    """Base of every error CXM raises on purpose."""


class MeshError(CxmError):
    """A call to a peer agent failed."""

    def __init__(self, agent: str, task_type: str, message: str, status: int | None = None):
        super().__init__(f"{agent}/{task_type}: {message}")
        self.agent = agent
        self.task_type = task_type
        self.status = status


class MeshUnavailable(MeshError):
    """The peer could not be reached or kept failing transiently after every retry."""


class MeshRejected(MeshError):
    """The peer answered 4xx: the request itself is wrong and retrying cannot help."""


class TaskFailed(CxmError):
    """A handler could not do its job; becomes a 422/502 answer with this message."""

    def __init__(self, message: str, *, code: str = "task_failed", status: int = 422):
        super().__init__(message)
        self.code = code
        self.status = status


class SouthboundError(CxmError):
    """CNC or PCA answered with an error or could not be reached."""

    def __init__(self, message: str, *, transient: bool = False):
        super().__init__(message)
        self.transient = transient
