"""Chaos bench (issue 15): incidents on an SNDlib network while agents are killed or gone.

Kill mode (default): every ``--kill-every`` seconds ``kill -9`` of one of the ten agents at
random (its process group), which ``cxm up`` restarts; ``--incidents`` link faults in waves
of ``--per-wave`` disjoint links. Down mode (``--down AGENT --down-s 60``): the agent is
stopped once the first wave is protected, stays down that long, then starts again; the other
agents retry, queue (outboxes) and drain in order when it is back. With ``--baseline`` (the
default) the same waves run first with nothing disturbed, on the same mesh, and every
incident's outcome is compared with its undisturbed twin. See :mod:`bench.chaos_lib` for the
checks; prints one JSON document (docs/reliability.md has the figures measured).

    python -m bench.chaos [--network sndlib/germany50] [--incidents 100] [--per-wave 1]
                          [--kill-every 3] [--time-scale 0.02] [--no-baseline]
                          [--down restore --down-s 60] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
from pathlib import Path

from bench.chaos_lib import run
from shared.settings import AGENTS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--network", default="sndlib/germany50")
    parser.add_argument("--incidents", type=int, default=100)
    parser.add_argument(
        "--per-wave",
        type=int,
        default=1,
        help="disjoint links failed at once (more than 1: outcomes may depend on timing)",
    )
    parser.add_argument("--kill-every", type=float, default=3.0, help="seconds between kills")
    parser.add_argument("--time-scale", type=float, default=0.02)
    parser.add_argument("--no-baseline", action="store_true", help="skip the undisturbed run")
    parser.add_argument("--down", choices=AGENTS, help="stop this agent instead of killing")
    parser.add_argument("--down-s", type=float, default=60.0)
    parser.add_argument("--wave-timeout", type=float, default=600.0)
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so cxm up and its children stop with the bench
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with tempfile.TemporaryDirectory(prefix="cxm-chaos-") as tmp:
        result = run(
            Path(tmp),
            network=args.network,
            incidents=args.incidents,
            per_wave=args.per_wave,
            time_scale=args.time_scale,
            kill_every_s=None if args.down else args.kill_every,
            baseline=not args.no_baseline,
            down=args.down,
            down_s=args.down_s,
            wave_timeout_s=args.wave_timeout,
            seed=args.seed,
            log=lambda line: print(line, file=sys.stderr, flush=True),
        )
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
