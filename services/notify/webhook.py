"""Inbound ServiceNow webhook: what operators do in ServiceNow flows back into CXM.

A Business Rule (or Flow) on the incident table posts the record's ``sys_id``/``number``,
``state``, the new comment or work note and who made it. The comment reaches the IO console as
a ``status_update`` from ``servicenow``; a resolve or close made by a person in ServiceNow also
tells the orchestrator (``incident_signal`` ``operator_resolved``). Both go through the outbox,
so an orchestrator or IO agent that is down receives them later, in order, exactly once.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from services.notify import store
from services.notify.settings import NotifySettings
from shared.agent import Access, EngineDep, RouteAuth, SettingsDep
from shared.contracts import INCIDENT_SIGNAL, STATUS_UPDATE
from shared.logs import get_logger
from shared.models import IncidentSignal, StatusUpdate
from shared.outbox import Outbox

log = get_logger(__name__)
router = APIRouter(prefix="/api/v1/servicenow", tags=["servicenow"])

STATE_LABELS: dict[str, str] = {
    "1": "New",
    "2": "In Progress",
    "3": "On Hold",
    "6": "Resolved",
    "7": "Closed",
    "8": "Canceled",
}
STATE_BY_LABEL: dict[str, str] = {v.lower(): k for k, v in STATE_LABELS.items()} | {
    "cancelled": "8",
    "in_progress": "2",
    "on_hold": "3",
}
RESOLVED_STATES = frozenset({"6", "7"})


class ServiceNowWebhook(BaseModel):
    """What the Business Rule sends; field names follow the incident table's."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    sys_id: str | None = Field(default=None, min_length=1, max_length=64)
    number: str | None = Field(default=None, min_length=1, max_length=40)
    state: str | None = None
    comments: str | None = None
    work_notes: str | None = None
    who: str | None = Field(
        default=None, validation_alias=AliasChoices("who", "sys_updated_by", "updated_by")
    )
    close_code: str | None = None
    close_notes: str | None = None
    sys_updated_on: str | None = None

    @field_validator("state", mode="before")
    @classmethod
    def _state_code(cls, value: Any) -> str | None:
        """Accept the numeric code (6, "6") or the display value ("Resolved")."""
        if value is None or value == "":
            return None
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ValueError("state must be a ServiceNow state code or label")
        text = str(value).strip()
        code = text if text in STATE_LABELS else STATE_BY_LABEL.get(text.lower())
        if code is None:
            raise ValueError(f"unknown incident state {text!r}")
        return code

    @model_validator(mode="after")
    def _has_reference(self) -> ServiceNowWebhook:
        if not (self.sys_id or self.number):
            raise ValueError("sys_id or number is required")
        return self


def _authorized(settings: NotifySettings, raw: bytes, request: Request) -> bool:
    secret = settings.servicenow_webhook_secret
    if secret is None:
        return False
    key = secret.get_secret_value().encode()
    if settings.servicenow_webhook_auth == "bearer":
        given = request.headers.get("authorization", "").encode()
        return hmac.compare_digest(given, b"Bearer " + key)
    header = request.headers.get(settings.servicenow_webhook_signature_header, "")
    signature = header.removeprefix("sha256=").strip().lower()
    expected = hmac.new(key, raw, hashlib.sha256).hexdigest()
    return hmac.compare_digest(signature.encode(), expected.encode())


SERVICENOW_AUTH = RouteAuth(
    Access.WEBHOOK,
    "ServiceNow cannot hold the mesh token: CXM_SERVICENOW_WEBHOOK_SECRET as a bearer or an "
    "HMAC-SHA256 of the body (_authorized); 401 without it, and while it is unset",
)


@router.post("/webhook", status_code=202, dependencies=[SERVICENOW_AUTH.depends])
async def servicenow_webhook(
    request: Request,
    engine: EngineDep,
    settings: SettingsDep,
) -> JSONResponse:
    """Reflect a ServiceNow change in CXM: 401 bad auth, 422 bad payload, 404 unknown incident."""
    notify_settings: NotifySettings = request.app.state.notify_settings
    raw = await request.body()
    if not _authorized(notify_settings, raw, request):
        reason = (
            "webhook disabled: CXM_SERVICENOW_WEBHOOK_SECRET is not set"
            if notify_settings.servicenow_webhook_secret is None
            else "bad or missing webhook credentials"
        )
        return JSONResponse({"detail": reason}, status_code=401)
    try:
        body = json.loads(raw)
        hook = ServiceNowWebhook.model_validate(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return JSONResponse({"detail": f"malformed JSON: {exc}"}, status_code=422)
    except ValidationError as exc:
        errors = [
            {"field": ".".join(map(str, e["loc"])) or "body", "message": e["msg"]}
            for e in exc.errors(include_url=False, include_context=False)
        ]
        return JSONResponse({"detail": errors}, status_code=422)

    mapping = await store.mapping_by_ref(engine, sys_id=hook.sys_id, number=hook.number)
    if mapping is None:
        ref = hook.sys_id or hook.number
        return JSONResponse({"detail": f"no CXM incident for ServiceNow {ref}"}, status_code=404)
    incident_id: str = mapping["incident_id"]
    answer: dict[str, Any] = {
        "incident_id": incident_id,
        "sys_id": mapping["sys_id"],
        "number": mapping["number"],
        "forwarded": [],
    }
    if hook.who and hook.who == notify_settings.servicenow_username:
        # Our own integration user's write coming back: already known to CXM, not news.
        answer["ignored"] = "change made by the CXM integration user"
        return JSONResponse(answer, status_code=200)

    await store.update_mapping(engine, incident_id, state=hook.state)
    outbox: Outbox = request.app.state.outbox
    # ServiceNow retries a webhook it thinks failed: the same change gets the same keys.
    change = hook.sys_updated_on or hashlib.sha256(raw).hexdigest()[:24]
    base_key = f"servicenow:{mapping['sys_id']}:{change}"
    state_label = STATE_LABELS.get(hook.state or "")
    text = hook.comments or hook.work_notes
    who = hook.who or "ServiceNow"
    message = f"{who}: {text}" if text else f"{who} set ServiceNow state to {state_label}"
    details = {
        "sys_id": mapping["sys_id"],
        "number": mapping["number"],
        "state": hook.state,
        "state_label": state_label,
        "who": hook.who,
        "comments": hook.comments,
        "work_notes": hook.work_notes,
    }
    if settings.io_enabled:
        await outbox.put(
            STATUS_UPDATE,
            StatusUpdate(
                incident_id=incident_id,
                status=mapping["last_status"] or "open",
                phase=mapping["last_phase"] or "servicenow",
                message=message,
                details={k: v for k, v in details.items() if v is not None},
                source_agent="servicenow",
            ),
            key=f"{base_key}:status_update",
            incident_id=incident_id,
        )
        answer["forwarded"].append("io:status_update")
    if hook.state in RESOLVED_STATES and not mapping["resolved_by_cxm"]:
        await outbox.put(
            INCIDENT_SIGNAL,
            IncidentSignal(
                incident_id=incident_id,
                signal="operator_resolved",
                details={
                    "source": "servicenow",
                    "resolved_by": hook.who,
                    "close_code": hook.close_code,
                    "close_notes": hook.close_notes or hook.comments or hook.work_notes,
                    "sys_id": mapping["sys_id"],
                    "number": mapping["number"],
                    "state": hook.state,
                },
            ),
            # Once per incident: "resolved" then "closed" in ServiceNow is one resolution.
            key=f"servicenow:{mapping['sys_id']}:operator_resolved",
            incident_id=incident_id,
        )
        answer["forwarded"].append("orchestrator:incident_signal")
    log.info(
        "servicenow change reflected",
        incident_id=incident_id,
        number=mapping["number"],
        state=hook.state,
        forwarded=answer["forwarded"],
    )
    return JSONResponse(answer, status_code=202)
