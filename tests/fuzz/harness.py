"""Schemathesis against every agent's OpenAPI, in-process over ASGI.

Each of the ten agents and the lab is built with its app factory, its dependencies faked the
way the package tests fake them: the CNC/PCA-backed agents (impact, path, tunnel, restore,
traffic, and IO's CNC and lab proxy) talk to a lab of their own over ASGI (as
tests/agents/test_against_lab.py does); the orchestrator's peers are
tests/orchestrator/fake_peers.py; IO's orchestrator is the real one of this mesh and its audit
is tests/io/fakes.py's; the correlator's CNC is tests/agents/fakes.py's ``TopologyCnc``; every
other peer is a mock transport that accepts each task.

Schemathesis loads each schema from the app's ``/openapi.json`` (``from_asgi``), with
``POST /a2a/tasks``' body described from the agent's contracts (:func:`with_task_bodies`), and
runs the apps' lifespans on its own event-loop thread; Hypothesis draws cases operation by
operation, valid ones (``GenerationMode.POSITIVE``) and invalid ones (``NEGATIVE``). Every case
carries the mesh token; IO's user API gets the bootstrap admin's token, the lab's CNC and PCA
APIs the JWT and token their logins hand out. A case fails on an answer in the 5xx range
(``not_a_server_error``, or an exception escaping the app), on a 2xx that breaks the
operation's documented schema (``response_schema_conformance``), or on a 4xx that does not
name the problem (:func:`names_the_problem`). Failures are collected, not raised, so one run
reports every finding with a curl line that reproduces it.

The short run is tests/fuzz/test_fuzz.py (``make test``); ``python -m bench.fuzz`` runs the long
one (at least 1,000 cases per agent) and prints JSON.
"""

from __future__ import annotations

import copy
import json
import math
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import httpx
import hypothesis
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, Phase, Verbosity
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.core.result import Ok
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import response_schema_conformance

from services.audit.app import create_app as audit_app
from services.audit.settings import AuditSettings
from services.correlator.app import create_app as correlator_app
from services.correlator.settings import CorrelatorSettings
from services.impact.app import create_app as impact_app
from services.io.app import create_app as io_app
from services.io.settings import IoSettings
from services.lab.app import create_app as lab_app
from services.lab.settings import LabSettings
from services.notify.app import create_app as notify_app
from services.notify.settings import NotifySettings
from services.orchestrator.app import create_app as orchestrator_app
from services.path.app import create_app as path_app
from services.restore.app import create_app as restore_app
from services.traffic.app import create_app as traffic_app
from services.traffic.settings import TrafficSettings
from services.tunnel.app import create_app as tunnel_app
from shared.settings import Settings
from tests.agents.fakes import TopologyCnc
from tests.io.fakes import network_app
from tests.orchestrator.fake_peers import FakeNetwork

MESH_TOKEN = "test-mesh-token"
CNC_SSO = "/crosswork/sso/v1/tickets"
AGENTS = (
    "correlator",
    "impact",
    "path",
    "tunnel",
    "restore",
    "traffic",
    "notify",
    "audit",
    "io",
    "lab",
    # Last: the incidents its fuzzed start_incident tasks open keep running on the shared
    # event loop after its turn, and would slow every agent fuzzed after it.
    "orchestrator",
)
CHECKS = [not_a_server_error, response_schema_conformance]
"""On answers below 400: the 2xx schema is the data contract. FastAPI documents every 422 as
its own validation-error list, which the agents' 422s that name a problem in their own words
(``{"detail": "…"}``) do not follow; a 4xx is held to :func:`names_the_problem` instead."""
STREAMS = {"GET /api/v1/stream"}
SPARE_ADMIN = "fuzz-spare-admin"
IO_ACCESS_CHANGES = {"DELETE /api/v1/tokens/{token_id}", "PATCH /api/v1/users/{username}"}
"""Server-sent events: a case reads what arrives within a second, then hangs up."""
MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)


def _client(app: FastAPI) -> asgi.ASGIClient:
    """Schemathesis' in-process client of ``app``; entering it starts the app's lifespan once."""
    return asgi.get_client(cast(Any, app))


# --- fakes ---------------------------------------------------------------------------------


def _accept(request: httpx.Request) -> httpx.Response:
    """A peer that accepts every task envelope it is sent."""
    try:
        body = json.loads(request.content)
        task_type = body.get("task_type", "unknown") if isinstance(body, dict) else "unknown"
    except ValueError:
        task_type = "unknown"
    return httpx.Response(200, json={"task_id": "fuzz", "task_type": task_type, "result": {}})


class _ByHost(httpx.AsyncBaseTransport):
    """Sends each request to the transport of its ``host:port`` or host (``lab.test`` …)."""

    def __init__(
        self,
        routes: dict[str, httpx.AsyncBaseTransport],
        default: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.routes = routes
        self.default = default

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        transport = self.routes.get(f"{url.host}:{url.port}", self.routes.get(url.host))
        transport = transport or self.default
        if transport is None:
            raise httpx.ConnectError(f"no fake for {request.url.host}", request=request)
        return await transport.handle_async_request(request)


def _correlator_cnc() -> TopologyCnc:
    return TopologyCnc(
        nodes=["pe1", "pe2", "pe3", "pe4"],
        links=[("pe1", "pe2", [100]), ("pe2", "pe3", [200]), ("pe3", "pe4", [100])],
    )


@dataclass
class Mesh:
    """The eleven apps, their fakes, and the headers that authenticate a case on each."""

    data_dir: Path
    apps: dict[str, FastAPI]
    southbound: FastAPI
    tokens: dict[str, str] = field(default_factory=dict)

    def headers(self, agent: str, path: str) -> dict[str, str]:
        token = MESH_TOKEN
        if agent == "io" and not path.startswith("/a2a"):
            token = self.tokens["io"]
        elif agent == "lab" and path.startswith("/crosswork/"):
            token = self.tokens["cnc"]  # CNC's API takes the JWT its SSO hands out
        elif agent == "lab" and path.startswith("/api/"):
            token = self.tokens["pca"]  # PCA's, the token its login hands out
        return {"Authorization": f"Bearer {token}"}

    def log_in(self) -> None:
        """IO's bootstrap admin token; a CNC JWT and a PCA token from the fuzzed lab."""
        self.tokens["io"] = (self.data_dir / "io" / "io-admin-token").read_text().strip()
        self.tokens["admin"] = self.tokens["io"]
        with _client(self.apps["io"]) as io:
            spare = io.post(
                "/api/v1/users",
                json={"username": SPARE_ADMIN, "role": "admin"},
                headers={"Authorization": f"Bearer {self.tokens['io']}"},
            )
            spare.raise_for_status()
            self.tokens[SPARE_ADMIN] = spare.json()["token"]
        creds = {"username": "cxm", "password": "cxm-lab"}
        with _client(self.apps["lab"]) as lab:
            tgt = lab.post(CNC_SSO, data=creds)
            tgt.raise_for_status()
            jwt = lab.post(f"{CNC_SSO}/{tgt.text}", data={"service": "https://lab/app-dashboard"})
            jwt.raise_for_status()
            self.tokens["cnc"] = jwt.text
            pca = lab.post("/api/v1/auth/login", data=creds)
            pca.raise_for_status()
            self.tokens["pca"] = pca.headers["authorization"].partition(" ")[2]

    def after(self, agent: str, label: str) -> None:
        """Undo what a case armed against the cases after it: the lab's injected faults, and
        a revoked or disabled fuzzing admin on IO (``DELETE /tokens/1`` is a valid case)."""
        if agent == "lab" and label == "POST /lab/faults":
            with _client(self.apps["lab"]) as lab:
                lab.delete("/lab/faults").raise_for_status()
        if agent == "io" and label in IO_ACCESS_CHANGES:
            self._keep_io_admins()

    def _keep_io_admins(self) -> None:
        """Two admins, each able to restore the other: at most one is hit per case."""
        with _client(self.apps["io"]) as io:
            for user, other in (("admin", SPARE_ADMIN), (SPARE_ADMIN, "admin")):
                mine = {"Authorization": f"Bearer {self.tokens[user]}"}
                if io.get("/api/v1/users", headers=mine).status_code == 200:
                    continue
                theirs = {"Authorization": f"Bearer {self.tokens[other]}"}
                fix = io.patch(
                    f"/api/v1/users/{user}",
                    json={"role": "admin", "disabled": False},
                    headers=theirs,
                )
                fix.raise_for_status()
                issued = io.post(f"/api/v1/users/{user}/tokens", json={}, headers=theirs)
                issued.raise_for_status()
                self.tokens[user] = issued.json()["token"]
        self.tokens["io"] = self.tokens["admin"]

    @staticmethod
    def expected(agent: str, label: str, status: int, body: bytes) -> bool:
        """A 5xx the emulated system is documented to answer (docs/southbound.md): CNC's
        empty-bodied 500 to a bearer that is not a JWT or input it cannot parse."""
        path = label.partition(" ")[2]
        return agent == "lab" and path.startswith("/crosswork/") and status == 500 and not body


def build_mesh(data_dir: Path) -> Mesh:
    """Every agent's app on its own data directory, dependencies faked (see the module doc)."""

    def settings(name: str, **extra: Any) -> Settings:
        (data_dir / name).mkdir(parents=True, exist_ok=True)
        return Settings(
            data_dir=data_dir / name,
            time_scale=0.01,
            mesh_token=MESH_TOKEN,
            port=8999,
            mesh_retries=0,
            cnc_url="http://lab.test",
            pca_url="http://lab.test",
            lab_url="http://lab.test",
            **extra,
        )

    # The agents' CNC/PCA: a lab of their own, apart from the lab being fuzzed.
    southbound = lab_app(settings("southbound"), LabSettings(push_alerts=False))
    lab = httpx.ASGITransport(app=southbound)
    accept = httpx.MockTransport(_accept)
    io_peers = _ByHost({"lab.test": lab, "audit.test": httpx.ASGITransport(app=network_app())})
    orchestrator = orchestrator_app(
        settings("orchestrator"), mesh_transport=FakeNetwork().transport()
    )
    apps: dict[str, FastAPI] = {
        "orchestrator": orchestrator,
        "correlator": correlator_app(
            settings("correlator"),
            mesh_transport=accept,
            config=CorrelatorSettings(tick_s=3600.0),
            cnc_transport=httpx.MockTransport(_correlator_cnc().handler),
        ),
        "impact": impact_app(settings("impact"), southbound_transport=lab),
        "path": path_app(settings("path"), southbound_transport=lab),
        "tunnel": tunnel_app(settings("tunnel"), southbound_transport=lab),
        "restore": restore_app(settings("restore"), southbound_transport=lab),
        "traffic": traffic_app(
            settings("traffic"),
            traffic_settings=TrafficSettings(sampler_enabled=False),
            southbound_transport=lab,
        ),
        "notify": notify_app(settings("notify"), NotifySettings(), mesh_transport=accept),
        "audit": audit_app(settings("audit"), AuditSettings()),
        "io": io_app(
            settings("io", audit_url="http://audit.test"),
            # IO's approvals, runbooks and credentials are the orchestrator's: the real one.
            mesh_transport=_ByHost(
                {"127.0.0.1:8000": httpx.ASGITransport(app=orchestrator)}, default=accept
            ),
            southbound_transport=lab,
            peer_transport=io_peers,
            io_settings=IoSettings(loopback_trust=False),
        ),
        "lab": lab_app(settings("lab"), LabSettings(push_alerts=False)),
    }
    return Mesh(data_dir, apps, southbound)


@contextmanager
def running_mesh(data_dir: Path | None = None) -> Iterator[Mesh]:
    """The mesh with every lifespan entered on schemathesis' ASGI event-loop thread."""
    with ExitStack() as stack:
        if data_dir is None:
            data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cxm-fuzz-")))
        mesh = build_mesh(data_dir)
        try:
            for app in (mesh.southbound, *mesh.apps.values()):
                stack.enter_context(_client(app))
            mesh.log_in()
            yield mesh
        finally:
            asgi.shutdown_lifespans()


# --- the fuzzer ----------------------------------------------------------------------------


@dataclass
class Finding:
    agent: str
    operation: str
    status: int
    check: str
    message: str
    curl: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "operation": self.operation,
            "status": self.status,
            "check": self.check,
            "message": self.message[:500],
            "reproduce": self.curl,
        }


@dataclass
class AgentReport:
    agent: str
    operations: int = 0
    cases: int = 0
    seconds: float = 0.0
    statuses: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)
    """401/403 answers by operation: cases that did not get past auth."""
    emulated: int = 0
    op_seconds: dict[str, float] = field(default_factory=dict)
    """5xx answers the lab emulates on purpose (``Mesh.expected``), not counted as findings."""
    findings: list[Finding] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def server_errors(self) -> list[Finding]:
        return [f for f in self.findings if f.status >= 500]

    @property
    def schema_violations(self) -> list[Finding]:
        return [f for f in self.findings if f.status < 400]

    @property
    def unclear_4xx(self) -> list[Finding]:
        return [f for f in self.findings if 400 <= f.status < 500]

    def summary(self) -> dict[str, Any]:
        by_operation = Counter(f"{f.status} {f.operation}" for f in self.server_errors)
        return {
            "operations": self.operations,
            "cases": self.cases,
            "5xx": len(self.server_errors),
            "schema_violations": len(self.schema_violations),
            "unclear_4xx": len(self.unclear_4xx),
            "emulated_cnc_500": self.emulated,
            "statuses": dict(sorted(self.statuses.items())),
            "refused_by_operation": dict(self.refused.most_common(5)),
            "seconds": round(self.seconds, 1),
            "slowest": {
                k: round(v, 1)
                for k, v in sorted(self.op_seconds.items(), key=lambda kv: -kv[1])[:3]
            },
            "5xx_by_operation": dict(by_operation),
            "first_findings": _first_per_operation(self.findings),
            "errors": self.errors[:10],
        }


def _first_per_operation(findings: list[Finding]) -> list[dict[str, Any]]:
    seen: dict[tuple[str, int, str], Finding] = {}
    for f in findings:
        seen.setdefault((f.operation, f.status, f.check), f)
    return [f.as_dict() for f in seen.values()]


def with_task_bodies(openapi: dict[str, Any], app: FastAPI) -> dict[str, Any]:
    """The app's OpenAPI with ``POST /a2a/tasks``'s body described: one envelope per task type
    the agent serves, its payload the contract's request model (shared.contracts).

    The route reads its body itself, so FastAPI documents none, and a fuzzer left to the bare
    schema would send nothing but empty bodies to the one route the mesh lives on.
    """
    doc = copy.deepcopy(openapi)
    operation = doc.get("paths", {}).get("/a2a/tasks", {}).get("post")
    skills = getattr(getattr(app.state, "spec", None), "skills", {})
    if operation is None or not skills:
        return doc
    models: list[tuple[type[BaseModel], Literal["validation"]]] = [
        (skill.contract.request, "validation") for skill in skills.values()
    ]
    refs, defs = models_json_schema(models, ref_template="#/components/schemas/Task_{model}")
    components = doc.setdefault("components", {}).setdefault("schemas", {})
    components.update({f"Task_{name}": value for name, value in defs.get("$defs", {}).items()})
    envelopes = [
        {
            "type": "object",
            "required": ["task_type", "payload"],
            "properties": {
                "task_type": {"type": "string", "enum": [task_type]},
                "payload": refs[(skill.contract.request, "validation")],
                "incident_id": {"type": "string"},
            },
        }
        for task_type, skill in skills.items()
    ]
    operation["requestBody"] = {
        "required": True,
        "content": {"application/json": {"schema": {"oneOf": envelopes}}},
    }
    return doc


def names_the_problem(agent: str, label: str, response: schemathesis.Response) -> str | None:
    """Why a 4xx does not say what is wrong, or None: a JSON body with a non-empty ``detail``.

    The lab's CNC and PCA emulation answer in those systems' own error formats, so its
    ``/crosswork`` and ``/api`` routes are not held to it.
    """
    path = label.partition(" ")[2]
    if agent == "lab" and path.startswith(("/crosswork/", "/api/")):
        return None
    try:
        body = json.loads(response.content)
    except ValueError:
        return "the answer is not JSON"
    if not isinstance(body, dict) or not body.get("detail"):
        return "the answer has no `detail` naming the problem"
    return None


def fuzz_agent(
    mesh: Mesh,
    agent: str,
    *,
    min_cases: int,
    max_examples: int | None = None,
    max_rounds: int = 20,
    seed: int = 0,
    deadline_s: float | None = None,
) -> AgentReport:
    """Fuzz ``agent``'s operations until ``min_cases`` cases ran (or ``deadline_s`` passed).

    A round draws, for every operation, up to ``max_examples`` cases (by default enough for
    ``min_cases`` over all operations), half valid and half invalid. Operations whose inputs
    are few run out early, so rounds repeat with new seeds until the count is met; the
    deadline is checked between rounds, so every operation is fuzzed at least once.
    """
    app = mesh.apps[agent]
    loaded = schemathesis.openapi.from_asgi("/openapi.json", app)
    schema = schemathesis.openapi.from_dict(with_task_bodies(loaded.raw_schema, app))
    schema.app = app
    schema.location = loaded.location
    operations = []
    report = AgentReport(agent)
    for result in schema.get_all_operations():
        if isinstance(result, Ok):
            operations.append(result.ok())
        else:
            report.errors.append(f"operation not loaded: {result.err()}"[:500])
    report.operations = len(operations)
    per_op = max_examples or math.ceil(min_cases / max(1, len(operations)))
    per_mode = max(1, math.ceil(per_op / len(MODES)))
    started = time.monotonic()
    for round_ in range(max_rounds):
        for operation in operations:
            for mode in MODES:
                _fuzz_operation(mesh, agent, operation, mode, per_mode, seed + round_, report)
        if report.cases >= min_cases or (
            deadline_s is not None and time.monotonic() - started > deadline_s
        ):
            break
    report.seconds = time.monotonic() - started
    return report


def _fuzz_operation(
    mesh: Mesh,
    agent: str,
    operation: Any,
    mode: GenerationMode,
    max_examples: int,
    seed: int,
    report: AgentReport,
) -> None:
    label = f"{operation.method.upper()} {operation.path}"
    headers = mesh.headers(agent, operation.path)

    def run_case(case: schemathesis.Case) -> None:
        try:
            response = case.call(headers=headers, timeout=1 if label in STREAMS else 30)
        except Exception as exc:
            # Over ASGI an unhandled exception reaches the caller (a server answers it 500).
            report.cases += 1
            report.statuses["500"] += 1
            report.findings.append(
                Finding(
                    agent=agent,
                    operation=label,
                    status=500,
                    check="unhandled_exception",
                    message=f"{type(exc).__name__}: {exc}",
                    curl=case.as_curl_command(headers=headers),
                )
            )
            return
        finally:
            mesh.after(agent, label)
        report.cases += 1
        report.statuses[str(response.status_code)] += 1
        if response.status_code in (401, 403):
            report.refused[label] += 1
        if mesh.expected(agent, label, response.status_code, response.content):
            report.emulated += 1
            return
        if 400 <= response.status_code < 500:
            problem = names_the_problem(agent, label, response)
            if problem is not None:
                report.findings.append(
                    Finding(
                        agent=agent,
                        operation=label,
                        status=response.status_code,
                        check="names_the_problem",
                        message=f"{problem}\n{response.text[:300]}",
                        curl=case.as_curl_command(headers=headers),
                    )
                )
            return
        try:
            case.validate_response(response, checks=CHECKS, headers=headers)
        except (FailureGroup, Failure) as exc:
            for failure in exc.exceptions if isinstance(exc, FailureGroup) else [exc]:
                report.findings.append(
                    Finding(
                        agent=agent,
                        operation=label,
                        status=response.status_code,
                        check=type(failure).__name__,
                        message=f"{failure}\n{response.text[:300]}",
                        curl=case.as_curl_command(headers=headers),
                    )
                )

    test: Callable[..., None] = hypothesis.given(operation.as_strategy(generation_mode=mode))(
        run_case
    )
    test = hypothesis.settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
        verbosity=Verbosity.quiet,
        print_blob=False,
    )(test)
    test = hypothesis.seed(seed)(test)
    started = time.monotonic()
    try:
        test()
    except hypothesis.errors.Unsatisfiable:
        pass  # no case of this mode exists (e.g. no negative input for a parameterless GET)
    except Exception as exc:
        report.errors.append(f"{label} ({mode.value}): {type(exc).__name__}: {exc}"[:500])
    finally:
        report.op_seconds[label] = report.op_seconds.get(label, 0.0) + time.monotonic() - started
