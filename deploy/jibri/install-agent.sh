#!/bin/bash
# Prepares a Jibri machine (the one you make the recorders' AMI from) for jibri-autoscaler:
# the agent in /opt/jibri-agent, its systemd unit, Jibri's finalize wrapper and config snippet,
# and the spool. Run as root from a checkout of this repository, after Jibri itself works.
#
#   sudo deploy/jibri/install-agent.sh [PIP_REQUIREMENT]
#
# PIP_REQUIREMENT defaults to this checkout; `jibri-autoscaler==0.1.0` or a wheel's path/URL
# work too. The unit is installed but not enabled: the launch template's user data writes the
# settings and the token at boot, then enables and starts it.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
REQUIREMENT=${1:-$ROOT}
VENV=/opt/jibri-agent
JIBRI_CONF_DIR=${JIBRI_CONF_DIR:-/etc/jitsi/jibri}
RECORDINGS=/var/lib/jibri/recordings
SPOOL=/var/spool/jibri-agent
INCLUDE_LINE='include file("/etc/jitsi/jibri/jibri-agent.conf")'

fail() { echo "install-agent: $*" >&2; exit 1; }

# Jibri reads the legacy config.json before jibri.conf: a finalize script or recordings
# directory set there wins over jibri-agent.conf, and recordings would never reach the spool.
LEGACY_CONFIG="$JIBRI_CONF_DIR/config.json"
if [ -f "$LEGACY_CONFIG" ]; then
    LEGACY_KEYS=$(grep -oE '"(finalize_recording_script_path|recording_directory)"[[:space:]]*:' \
        "$LEGACY_CONFIG" | grep -oE '[a-z_]+' | sort -u | paste -sd ' ' - || true)
    if [ -n "$LEGACY_KEYS" ]; then
        fail "$LEGACY_CONFIG sets ${LEGACY_KEYS// /, }, which Jibri reads before jibri.conf," \
            "so recordings would bypass the agent's spool. Remove these keys from it" \
            "(jibri-agent.conf sets recording.finalize-script and recording.recordings-directory)," \
            "then run this again."
    fi
fi

[ "$(id -u)" -eq 0 ] || fail "run as root"
id jibri >/dev/null 2>&1 || fail "no user jibri: install and configure Jibri first"
[ -f "$JIBRI_CONF_DIR/jibri.conf" ] || fail "no $JIBRI_CONF_DIR/jibri.conf: configure Jibri first"

PYTHON=$(command -v python3.13 || command -v python3.12 || command -v python3.11 || true)
if [ -z "$PYTHON" ]; then
    apt-get update -qq
    apt-get install -y -qq python3.11 python3.11-venv || fail "the agent needs Python >= 3.11"
    PYTHON=$(command -v python3.11)
fi
"$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check --upgrade pip
"$VENV/bin/pip" install --quiet --disable-pip-version-check "$REQUIREMENT"
"$VENV/bin/python" -m agent run --help >/dev/null

install -m 0755 "$HERE/jibri-agent-finalize" /usr/local/bin/jibri-agent-finalize
install -m 0644 "$HERE/jibri-agent.conf" "$JIBRI_CONF_DIR/jibri-agent.conf"
if ! grep -qxF "$INCLUDE_LINE" "$JIBRI_CONF_DIR/jibri.conf"; then
    printf '\n%s\n' "$INCLUDE_LINE" >> "$JIBRI_CONF_DIR/jibri.conf"
fi

install -d -m 0755 /var/lib/jibri
install -d -m 0750 -o jibri -g jibri "$RECORDINGS" "$SPOOL"
if [ "$(stat -c %d "$RECORDINGS")" != "$(stat -c %d "$SPOOL")" ]; then
    fail "$RECORDINGS and $SPOOL must be on one filesystem (the hand-off is a rename)"
fi

install -d -m 0750 -o root -g jibri /etc/jibri-agent
if [ ! -f /etc/jibri-agent/agent.env ]; then
    install -m 0640 -o root -g jibri "$HERE/agent.env" /etc/jibri-agent/agent.env
fi
install -m 0644 "$ROOT/deploy/systemd/jibri-agent.service" /etc/systemd/system/jibri-agent.service
# Warm pools: Jibri waits until the instance is bound for service (docs/warm-pools.md).
install -d -m 0755 /etc/systemd/system/jibri.service.d
install -m 0644 "$HERE/jibri-warm-gate.conf" /etc/systemd/system/jibri.service.d/warm-gate.conf
systemctl daemon-reload
systemctl restart jibri.service
echo "install-agent: done; Jibri restarted with $JIBRI_CONF_DIR/jibri-agent.conf"
