"""IO's relay to the lab with names a fuzzer or a careless user sends: each reaches the lab as
one path segment and gets the lab's own answer, never a 500 from building the URL."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest

from tests.io.conftest import IoFactory

ODD_NAMES = ["%", "a%2Fb", "x y", "..", "é", "a?b=c", "#frag", "%00", "\\"]


@pytest.mark.parametrize("name", ODD_NAMES)
async def test_odd_names_reach_the_lab_as_one_segment(
    make_io: IoFactory, network_calls: list[tuple[str, Any]], name: str
) -> None:
    sent = quote(name, safe="")
    if name == "..":  # would climb to another lab path: IO refuses it itself
        async with make_io() as io:
            for path in (f"/api/v1/lab/scenarios/{sent}", f"/api/v1/lab/links/{sent}/degrade"):
                assert (await io.http.post(path)).status_code == 404
        assert network_calls == []
        return
    async with make_io() as io:
        scenario = await io.http.post(f"/api/v1/lab/scenarios/{sent}")
        assert scenario.status_code == 200, scenario.text
        assert scenario.json()["scenario"] == name
        link = await io.http.post(f"/api/v1/lab/links/{sent}/degrade")
        assert link.status_code == 404, link.text  # the lab's answer: no such link
    assert network_calls == [(f"scenario {name}", None), (f"degrade {name}", {})]
