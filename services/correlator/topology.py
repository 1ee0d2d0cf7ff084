"""What the correlator knows about the network: links, their nodes and SRLGs, from CNC.

The topology is fetched through the shared CNC client and cached for a while; each link keeps
the interfaces CNC names for both its directions, so a CNC alarm about ``pe1:GigabitEthernet…``
finds its link. When CNC is unreachable the correlator still works: a link's nodes are read from
its name (``pe1-pe2``), so correlation degrades to shared nodes only, without SRLGs.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field

from shared.errors import SouthboundError
from shared.logs import get_logger
from shared.southbound import CncClient, Topology

log = get_logger(__name__)

_LINK_IN_TEXT = re.compile(r"\b([A-Za-z0-9_.:]+-[A-Za-z0-9_.:]+)\b")


@dataclass
class TopologyView:
    """Links by name with their two nodes and SRLGs; ``known`` is False when CNC was down."""

    links: dict[str, tuple[str, str]] = field(default_factory=dict)
    srlgs: dict[str, frozenset[int]] = field(default_factory=dict)
    interfaces: dict[str, str] = field(default_factory=dict)
    """``node:interface`` → link."""
    known: bool = False

    def canonical(self, link: str) -> str:
        """The topology's own name for a link given either way round (``pe2-pe1`` → ``pe1-pe2``)."""
        if link in self.links:
            return link
        a, _, b = link.partition("-")
        reverse = f"{b}-{a}"
        if reverse in self.links:
            return reverse
        for name, ends in self.links.items():
            if set(ends) == {a, b}:
                return name
        return link

    def nodes_of(self, link: str) -> tuple[str, str]:
        if link in self.links:
            return self.links[link]
        a, _, b = link.partition("-")
        return a, b

    def srlgs_of(self, link: str) -> frozenset[int]:
        return self.srlgs.get(link, frozenset())

    def links_of_node(self, node: str) -> list[str]:
        return sorted(name for name, ends in self.links.items() if node in ends)

    def related(self, a: str, b: str) -> str | None:
        """Why two links belong together (a shared node or SRLG), or None."""
        if a == b:
            return "same link"
        shared = set(self.nodes_of(a)) & set(self.nodes_of(b))
        if shared:
            return f"shared node {sorted(shared)[0]}"
        common = self.srlgs_of(a) & self.srlgs_of(b)
        if common:
            return f"shared SRLG {sorted(common)[0]}"
        return None

    def links_in_text(self, text: str) -> list[str]:
        """Link names of this topology mentioned in free text (CNC symptoms, descriptions)."""
        found = []
        for candidate in _LINK_IN_TEXT.findall(text):
            name = self.canonical(candidate)
            if name in self.links and name not in found:
                found.append(name)
        return found


class TopologyCache:
    """The CNC topology, refreshed at most once per TTL; a failed fetch is retried sooner.

    One fetch at a time, and no request waits for a refresh: once a topology is known, an
    expired one is served while a background task reads the new one (an alert storm must not
    queue behind CNC). Only before the first topology is known do callers wait, all on the
    same fetch, so the first alerts are not correlated on a view without SRLGs while it runs.
    Only the structure is read (ends, SRLGs, interfaces), never the per-link delays.
    """

    def __init__(self, client: CncClient, ttl_s: float, extra_interfaces: dict[str, str]):
        self.client = client
        self.ttl_s = ttl_s
        self.extra_interfaces = dict(extra_interfaces)
        self.view = TopologyView(interfaces=dict(extra_interfaces))
        self._fetched_at = 0.0
        self._fetch: asyncio.Task[None] | None = None

    async def get(self) -> TopologyView:
        age = time.monotonic() - self._fetched_at
        ttl = self.ttl_s if self.view.known else min(self.ttl_s, 5.0)
        if self._fetched_at and age < ttl:
            return self.view
        if self._fetch is None or self._fetch.done():
            self._fetch = asyncio.create_task(self._refresh(), name="correlator-topology")
        if not self.view.known:
            # shield: a caller that gives up (its client went away) must not cancel the
            # fetch the others wait on
            await asyncio.shield(self._fetch)
        return self.view

    async def _refresh(self) -> None:
        try:
            self.view = view_of(await self.client.topology_structure(), self.extra_interfaces)
        except SouthboundError as exc:
            if self.view.known:
                log.warning("CNC topology refresh failed; keeping the last one", error=str(exc))
            else:
                log.warning("CNC topology unavailable; correlating by shared node", error=str(exc))
        finally:
            self._fetched_at = time.monotonic()

    async def aclose(self) -> None:
        """Stop a fetch still running (the lifespan closes the client it uses next)."""
        if self._fetch is not None and not self._fetch.done():
            self._fetch.cancel()
            await asyncio.gather(self._fetch, return_exceptions=True)


def view_of(topology: Topology, extra_interfaces: dict[str, str]) -> TopologyView:
    """The correlator's view of CNC's topology: ends, SRLGs and ``node:interface`` names."""
    view = TopologyView(known=True)
    for link in topology.links:
        name = link.link_id
        view.links[name] = (link.source, link.destination)
        view.srlgs[name] = frozenset(link.srlgs)
        for direction in link.interfaces:
            if direction.source_tp:
                view.interfaces[f"{direction.source}:{direction.source_tp}"] = name
            if direction.dest_tp:
                view.interfaces[f"{direction.destination}:{direction.dest_tp}"] = name
    view.interfaces.update(extra_interfaces)
    return view
