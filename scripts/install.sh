#!/usr/bin/env bash
# Install what cunxiang needs on Debian/Ubuntu: system packages when missing, then the
# Python package into ./.venv. `--test` adds what the test suite needs (Mosquitto, PostgreSQL,
# chromium and a Chinese font for the browser tests).
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
[ "${1:-}" = "--test" ] && want_test=1

have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }

pkgs=()
have ffmpeg || pkgs+=(ffmpeg)
have espeak-ng || pkgs+=(espeak-ng)
if [ "$want_test" = 1 ]; then
  have mosquitto || pkgs+=(mosquitto)
  have sox || pkgs+=(sox)
  ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || pkgs+=(postgresql)
  # browser tests of the console (tests/web): Debian's chromium, and a CJK font so Chinese renders
  have chromium || pkgs+=(chromium)
  fc-list 2>/dev/null | grep -qi "wenquanyi micro hei" || pkgs+=(fonts-wqy-microhei)
fi
if [ ${#pkgs[@]} -gt 0 ]; then
  echo "installing system packages: ${pkgs[*]}"
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
extra=""
[ "$want_test" = 1 ] && extra="[test]"
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".${extra}"
