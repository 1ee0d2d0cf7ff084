"""The agents' HTTP protocol: writes of one event-loop turn leave together, in order."""

from __future__ import annotations

import asyncio
from typing import Any

from cxm.serving import _TurnTransport


class _Recorder:
    """A transport that records what reaches it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def write(self, data: bytes) -> None:
        self.calls.append(("write", data))

    def write_eof(self) -> None:
        self.calls.append(("eof", None))

    def close(self) -> None:
        self.calls.append(("close", None))

    def abort(self) -> None:
        self.calls.append(("abort", None))

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str) -> Any:
        return f"info:{name}"


async def test_writes_of_one_turn_leave_in_one_write_and_a_close_sends_them_first() -> None:
    real = _Recorder()
    turn = _TurnTransport(real, asyncio.get_running_loop())  # type: ignore[arg-type]
    turn.write(b"HTTP/1.1 202 Accepted\r\n\r\n")
    turn.write(b"{}")
    assert real.calls == []  # held until the end of this turn
    assert turn.get_write_buffer_size() == 27
    await asyncio.sleep(0)
    assert real.calls == [("write", b"HTTP/1.1 202 Accepted\r\n\r\n{}")]
    turn.writelines([b"a", b"b"])
    turn.write_eof()
    turn.write(b"c")
    turn.close()
    await asyncio.sleep(0)
    assert real.calls[1:] == [("write", b"ab"), ("eof", None), ("write", b"c"), ("close", None)]
    turn.write(b"lost")
    turn.abort()
    await asyncio.sleep(0)
    assert real.calls[-1] == ("abort", None)
    assert turn.get_extra_info("socket") == "info:socket"  # the rest is the real transport's
