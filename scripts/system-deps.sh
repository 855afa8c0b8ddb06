#!/usr/bin/env bash
# Debian packages the test suite needs beyond Python: a real Prometheus and promtool
# (tests/e2e/test_prometheus.py, tests/test_deploy_prometheus.py), shellcheck for the boot and
# install scripts, and systemd-analyze for the units. Installs what is missing; a no-op otherwise.
set -euo pipefail

missing=()
{ command -v prometheus && command -v promtool; } >/dev/null || missing+=(prometheus)
command -v shellcheck >/dev/null || missing+=(shellcheck)
command -v systemd-analyze >/dev/null || missing+=(systemd)
[ "${#missing[@]}" -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    echo "the tests need these Debian packages: ${missing[*]}" >&2
    echo "install them (apt-get install ${missing[*]}) or run this as root on Debian" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The packaged service is not wanted: the tests start their own Prometheus on loopback.
if command -v systemctl >/dev/null; then systemctl stop prometheus 2>/dev/null || true; fi
