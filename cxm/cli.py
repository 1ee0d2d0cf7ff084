"""The ``cxm`` command line: run the mesh, one agent, a lab scenario, or make secrets."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
from collections.abc import Sequence

from pydantic_settings import SettingsError

from cxm.scenario import parse_params, run_scenario
from cxm.supervisor import port_free, supervise
from shared.settings import AGENT_PORTS, load_settings


def run_agent(name: str) -> int:
    """Serve one agent in this process, as compose and ``cxm up`` run it."""
    import uvicorn

    from shared.logs import configure_logging

    if name not in AGENT_PORTS:
        print(
            f"cxm: unknown agent {name!r}; choose one of {', '.join(AGENT_PORTS)}", file=sys.stderr
        )
        return 2
    settings = load_settings(name)
    configure_logging(settings.log_level, settings.log_format)
    port = settings.port or AGENT_PORTS[name]
    if not port_free(settings.host, port):
        print(
            f"cxm: port {port} on {settings.host} is already in use; {name} cannot start "
            f"(stop what holds it, or set CXM_{name.upper()}__PORT)",
            file=sys.stderr,
        )
        return 1
    module = importlib.import_module(f"services.{name}.app")
    app = module.create_app(settings)
    from cxm.serving import TurnHttpToolsProtocol

    config = uvicorn.Config(
        app,
        host=settings.host,
        port=port,
        log_config=None,
        access_log=False,
        lifespan="on",
        http=TurnHttpToolsProtocol,
    )
    server = uvicorn.Server(config)
    server.run()
    return 0 if server.started else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cxm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the ten agents and the lab, supervise them")
    up.add_argument("--no-lab", action="store_true", help="do not start the network lab")
    up.add_argument("--only", nargs="*", help="start only these agents")
    agent = sub.add_parser("agent", help="run one agent in the foreground")
    agent.add_argument("name", choices=list(AGENT_PORTS))
    scenario = sub.add_parser("scenario", help="play a lab scenario against a running mesh")
    scenario.add_argument("name")
    scenario.add_argument("--wait", action="store_true", help="wait until the ticket closes")
    scenario.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a scenario parameter, repeatable (busy-hour: --set peak_pct=95 --set repeat=3)",
    )
    audit = sub.add_parser("audit", help="audit log tools: `cxm audit verify` checks the chain")
    audit.add_argument("args", nargs=argparse.REMAINDER)
    secrets = sub.add_parser(
        "secrets", help="`cxm secrets init`: generate the mesh token and database password once"
    )
    secrets.add_argument("args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    try:
        return _dispatch(args)
    except SettingsError as exc:
        # a *_FILE that is missing or empty: say which, never a traceback (or a value)
        print(f"cxm: {exc}", file=sys.stderr)
        return 2


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "secrets":
        return int(importlib.import_module("cxm.secrets").main(args.args, load_settings()))
    if args.command == "agent":
        return run_agent(args.name)
    if args.command == "up":
        names = args.only or [n for n in AGENT_PORTS if not (args.no_lab and n == "lab")]
        return asyncio.run(supervise(names))
    if args.command == "audit":
        return int(importlib.import_module("services.audit.verify").main(args.args))
    if args.command == "scenario":
        try:
            params = parse_params(args.set)
        except ValueError as exc:
            print(f"cxm scenario: {exc}", file=sys.stderr)
            return 2
        return asyncio.run(run_scenario(load_settings(), args.name, wait=args.wait, params=params))
    return 2


if __name__ == "__main__":
    sys.exit(main())
