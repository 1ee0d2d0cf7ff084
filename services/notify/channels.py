"""The three outbound channels behind one small interface: ``send`` returns what was created or
raises ``ChannelError`` saying whether a retry can help.

Webex goes through webexteamssdk, which is synchronous (requests), so each call runs in a
worker thread; ServiceNow is the Table API over httpx; Email is SMTP through aiosmtplib.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

import aiosmtplib
import httpx
import requests
from webexteamssdk import WebexTeamsAPI
from webexteamssdk.exceptions import ApiError, RateLimitError

from services.notify.settings import NotifySettings
from services.notify.templates import Rendered

TRANSIENT_HTTP = frozenset({408, 425, 429, 500, 502, 503, 504})


class ChannelError(Exception):
    """A delivery attempt failed; ``transient`` says whether retrying may succeed."""

    def __init__(self, message: str, *, transient: bool, retry_after: float | None = None):
        super().__init__(message)
        self.transient = transient
        self.retry_after = retry_after


@dataclass(frozen=True)
class Sent:
    external_id: str | None
    info: dict[str, Any] = field(default_factory=dict)


class WebexChannel:
    """Posts Markdown to one room. The SDK's own rate-limit sleep is off: our retry loop
    backs off instead, so a worker thread is never parked for a minute."""

    def __init__(self, settings: NotifySettings):
        assert settings.webex_access_token is not None and settings.webex_room_id is not None
        self.room_id = settings.webex_room_id
        self.api = WebexTeamsAPI(
            access_token=settings.webex_access_token.get_secret_value(),
            base_url=settings.webex_base_url,
            single_request_timeout=max(1, int(settings.notify_timeout_s)),
            wait_on_rate_limit=False,
        )

    async def send(self, message: Rendered) -> Sent:
        try:
            created = await asyncio.to_thread(
                self.api.messages.create, roomId=self.room_id, markdown=message.markdown
            )
        except RateLimitError as exc:
            raise ChannelError(
                f"Webex rate limited: {exc}", transient=True, retry_after=float(exc.retry_after)
            ) from None
        except ApiError as exc:
            transient = exc.status_code in TRANSIENT_HTTP
            raise ChannelError(f"Webex API error {exc}", transient=transient) from None
        except requests.RequestException as exc:
            raise ChannelError(f"Webex unreachable: {type(exc).__name__}", transient=True) from None
        return Sent(external_id=str(created.id), info={"room_id": self.room_id})


class ServiceNowClient:
    """The incident table of one instance; basic auth or an OAuth bearer token."""

    TABLE = "/api/now/table/incident"

    def __init__(
        self, settings: NotifySettings, *, transport: httpx.AsyncBaseTransport | None = None
    ):
        assert settings.servicenow_url is not None
        auth: httpx.Auth | None = None
        headers = {"Accept": "application/json", "Content-Type": "application/json"}
        if settings.servicenow_token is not None:
            headers["Authorization"] = f"Bearer {settings.servicenow_token.get_secret_value()}"
        elif settings.servicenow_username and settings.servicenow_password is not None:
            auth = httpx.BasicAuth(
                settings.servicenow_username, settings.servicenow_password.get_secret_value()
            )
        self.http = httpx.AsyncClient(
            base_url=settings.servicenow_url.rstrip("/"),
            auth=auth,
            headers=headers,
            timeout=settings.notify_timeout_s,
            transport=transport,
        )

    async def aclose(self) -> None:
        await self.http.aclose()

    async def find_by_correlation(self, correlation_id: str) -> dict[str, Any] | None:
        """The incident a previous, interrupted create may already have made for this id."""
        data = await self._call(
            "GET",
            self.TABLE,
            params={
                "sysparm_query": f"correlation_id={correlation_id}",
                "sysparm_limit": "1",
                "sysparm_fields": "sys_id,number,state",
            },
        )
        result = data.get("result")
        if isinstance(result, list) and result:
            first: dict[str, Any] = result[0]
            return first
        return None

    async def create(self, fields: dict[str, Any]) -> dict[str, Any]:
        data = await self._call("POST", self.TABLE, json=fields)
        result: dict[str, Any] = data.get("result") or {}
        if not result.get("sys_id"):
            raise ChannelError("ServiceNow create answered without result.sys_id", transient=False)
        return result

    async def update(self, sys_id: str, fields: dict[str, Any]) -> dict[str, Any]:
        data = await self._call("PATCH", f"{self.TABLE}/{sys_id}", json=fields)
        result: dict[str, Any] = data.get("result") or {}
        return result

    async def _call(self, method: str, url: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = await self.http.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            raise ChannelError(
                f"ServiceNow unreachable: {type(exc).__name__}", transient=True
            ) from None
        if response.status_code >= 400:
            raise ChannelError(
                f"ServiceNow {method} HTTP {response.status_code}: {_snow_error(response)}",
                transient=response.status_code in TRANSIENT_HTTP,
            )
        try:
            body: dict[str, Any] = response.json()
        except ValueError:
            raise ChannelError("ServiceNow answered with non-JSON", transient=False) from None
        return body


class EmailChannel:
    def __init__(self, settings: NotifySettings):
        self.settings = settings

    async def send(self, message: Rendered, *, key: str, incident_id: str | None) -> Sent:
        s = self.settings
        msg = EmailMessage()
        msg["Subject"] = message.subject
        msg["From"] = s.smtp_from
        msg["To"] = ", ".join(s.smtp_to)
        domain = s.smtp_from.rsplit("@", 1)[-1] or "cxm"
        # The same notification always has the same Message-ID, so a mail that does go out
        # twice (a crash between SMTP and the log) is recognisable as a duplicate.
        digest = hashlib.sha256(key.encode()).hexdigest()[:32]
        msg["Message-ID"] = f"<{digest}@{domain}>"
        if incident_id:
            msg["X-CXM-Incident"] = incident_id
        msg["X-CXM-Event"] = message.kind
        msg.set_content(message.text)
        msg.add_alternative(message.html, subtype="html")
        try:
            await aiosmtplib.send(
                msg,
                hostname=s.smtp_host,
                port=s.smtp_port,
                username=s.smtp_username,
                password=s.smtp_password.get_secret_value() if s.smtp_password else None,
                use_tls=s.smtp_tls == "tls",
                start_tls=s.smtp_tls == "starttls",
                timeout=s.notify_timeout_s,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [r.code for r in exc.recipients]
            raise ChannelError(
                f"SMTP recipients refused: {codes}", transient=all(400 <= c < 500 for c in codes)
            ) from None
        except aiosmtplib.SMTPResponseException as exc:
            raise ChannelError(
                f"SMTP {exc.code}: {exc.message}", transient=400 <= exc.code < 500
            ) from None
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise ChannelError(f"SMTP unreachable: {type(exc).__name__}", transient=True) from None
        return Sent(external_id=msg["Message-ID"], info={"recipients": len(s.smtp_to)})


def _snow_error(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        return str(err.get("message") or err)[:300]
    return str(body)[:300]
