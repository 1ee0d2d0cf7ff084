"""What the console's browser tests share: Debian's Chromium, headless, and where screenshots go
(``CXM_SCREENSHOT_DIR``, as ``make screenshots`` sets it, else a temporary folder)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
HAVE_CHROMIUM = Path(CHROMIUM).exists()
SHOTS = Path(os.environ.get("CXM_SCREENSHOT_DIR") or tempfile.mkdtemp(prefix="cxm-shots-"))
SHOTS.mkdir(parents=True, exist_ok=True)
