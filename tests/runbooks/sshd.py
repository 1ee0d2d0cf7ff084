"""A real OpenSSH server (Debian's ``openssh-server``) on a free loopback port, for the tests.

It runs with no configuration file (``-f /dev/null``) and every option on the command line,
a host key and a client key made by ``ssh-keygen`` in a temporary directory, as the ansible
and pylibssh test suites do. Only public-key logins for the generated client key succeed;
password logins are offered (``PasswordAuthentication=yes`` without PAM) so a wrong password
is refused by the server itself.
"""

from __future__ import annotations

import os
import pwd
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support import free_port

SSHD = "/usr/sbin/sshd"


@dataclass(frozen=True)
class Sshd:
    """A running server: where it listens, the key it presents and the key it lets in."""

    port: int
    host_key_line: str  # a known_hosts line for [127.0.0.1]:port
    client_key: str  # OpenSSH private key text, authorised for the current user
    user: str
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def accepted_logins(self) -> int:
        """How many logins the server accepted so far (one per SSH connection)."""
        return self.log_text().count("Accepted publickey for ")


def keygen(path: Path, comment: str) -> tuple[str, str]:
    """A new ed25519 key pair at ``path``; returns (private key text, public key line)."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        capture_output=True,
    )
    return path.read_text(), Path(f"{path}.pub").read_text().strip()


def host_key_line(port: int, public_line: str) -> str:
    """The known_hosts line for the server's public key on ``127.0.0.1:port``."""
    key_type, key_b64 = public_line.split()[:2]
    return f"[127.0.0.1]:{port} {key_type} {key_b64}"


@contextmanager
def sshd(base: Path, *, max_sessions: int = 10) -> Iterator[Sshd]:
    """Start ``sshd -D`` on a free loopback port; stop it (and its sessions) afterwards."""
    base.mkdir(parents=True, exist_ok=True)
    # sshd checks that its privilege-separation directory exists, and Debian creates it only
    # from the system service's unit, which these machines never start.
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    _, host_public = keygen(base / "host_ed25519", "cxm-test-host")
    client_private, client_public = keygen(base / "client_ed25519", "cxm-test-client")
    authorized = base / "authorized_keys"
    authorized.write_text(client_public + "\n")
    authorized.chmod(0o600)
    log = base / "sshd.log"
    port = free_port()
    proc = subprocess.Popen(
        [
            SSHD,
            "-D",
            "-f",
            "/dev/null",
            "-E",
            str(log),
            "-o",
            f"HostKey={base / 'host_ed25519'}",
            "-o",
            f"Port={port}",
            "-o",
            "ListenAddress=127.0.0.1",
            "-o",
            f"AuthorizedKeysFile={authorized}",
            "-o",
            "StrictModes=no",
            "-o",
            "PasswordAuthentication=yes",
            "-o",
            "KbdInteractiveAuthentication=no",
            "-o",
            "UsePAM=no",
            "-o",
            "PermitRootLogin=yes",
            "-o",
            f"MaxSessions={max_sessions}",
            "-o",
            "MaxStartups=100",
            "-o",
            "LogLevel=INFO",
            "-o",
            f"PidFile={base / 'sshd.pid'}",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"sshd exited with {proc.returncode}: {log.read_text()}")
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"sshd did not listen on {port}: {log.read_text()}")
            time.sleep(0.02)
        user = pwd.getpwuid(os.getuid()).pw_name
        yield Sshd(port, host_key_line(port, host_public), client_private, user, log)
    finally:
        proc.terminate()
        proc.wait(15)
