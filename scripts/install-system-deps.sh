#!/usr/bin/env bash
# Installs the Debian packages the tests run for real, once: PostgreSQL, Prometheus
# Alertmanager, Chromium (driven by Playwright), docker-compose (to validate the compose
# file; no engine is needed for `config`) and OpenSSH's server (the runbook SSH tests start
# their own sshd on a loopback port; the system service is not used).
set -euo pipefail
need=()
[ -x /usr/lib/postgresql/*/bin/postgres ] 2>/dev/null || ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need+=(postgresql)
command -v prometheus-alertmanager >/dev/null 2>&1 || need+=(prometheus-alertmanager)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
[ ${#need[@]} -eq 0 ] && exit 0
echo "installing Debian packages: ${need[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
