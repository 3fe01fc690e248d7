#!/usr/bin/env bash
# Install what cunxiang needs on Debian/Ubuntu: system packages when missing, then the
# Python packages (the server, ./shared and ./agent) into ./.venv. `--test` adds what the test
# suite needs (Mosquitto, PostgreSQL, chromium and a Chinese font for the browser tests).
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
[ "${1:-}" = "--test" ] && want_test=1

have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }
have_browser() { have chromium || have chromium-browser; }

sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
apt_updated=0
apt_install() {
  if [ "$apt_updated" = 0 ]; then
    $sudo apt-get update -qq
    apt_updated=1
  fi
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# Python first: nothing below helps if it is too old (Ubuntu 22.04 ships 3.10).
command -v python3 >/dev/null 2>&1 || apt_install python3 python3-venv
if ! command -v python3 >/dev/null 2>&1; then
  echo "error: python3 not found; cunxiang needs Python 3.11 or newer" >&2
  exit 1
fi
if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "error: cunxiang needs Python 3.11 or newer; python3 is $(python3 -V 2>&1 | cut -d' ' -f2)" \
       "($(command -v python3)). Install a newer one (e.g. Debian 12, Ubuntu 24.04, or pyenv)" \
       "and put it first on PATH as python3." >&2
  exit 1
fi

pkgs=()
# `python3 -m venv` needs ensurepip, which Debian and Ubuntu split off into python3-venv.
python3 -c 'import ensurepip' >/dev/null 2>&1 || pkgs+=(python3-venv)
have ffmpeg || pkgs+=(ffmpeg)
have espeak-ng || pkgs+=(espeak-ng)
if [ "$want_test" = 1 ]; then
  have mosquitto || pkgs+=(mosquitto)
  have sox || pkgs+=(sox)
  ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || pkgs+=(postgresql)
  # a CJK font, so Chinese renders in the browser tests of the console (tests/web)
  fc-list 2>/dev/null | grep -qi "wenquanyi micro hei" || pkgs+=(fonts-wqy-microhei)
fi
if [ ${#pkgs[@]} -gt 0 ]; then
  echo "installing system packages: ${pkgs[*]}"
  apt_install "${pkgs[@]}"
fi
if [ "$want_test" = 1 ] && ! have_browser; then
  # Debian's package is chromium; Ubuntu has only chromium-browser (a snap wrapper).
  echo "installing system packages: chromium"
  apt_install chromium || apt_install chromium-browser ||
    echo "warning: could not install chromium or chromium-browser; the browser tests (tests/web) will" \
         "fail until one is installed (or CUNXIANG_CHROMIUM names a chromium binary)" >&2
fi

if ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
  echo "error: $(command -v python3) has no ensurepip, so it cannot make ./.venv;" \
       "install its venv package (python3-venv, or python3.X-venv for the version in use)" >&2
  exit 1
fi
# A .venv left half-made by an earlier failed run (no pip), or made by an older Python, is made anew.
venv_ok() {
  .venv/bin/python -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1 &&
    .venv/bin/python -m pip --version >/dev/null 2>&1
}
if ! venv_ok; then
  [ -e .venv ] && echo "./.venv is incomplete or too old: making it again"
  rm -rf .venv
  if ! python3 -m venv .venv; then
    rm -rf .venv
    echo "error: python3 -m venv .venv failed (see above)" >&2
    exit 1
  fi
fi
extra=""
[ "$want_test" = 1 ] && extra="[test]"
# Three distributions, one pip call: the server needs cunxiang-shared and cunxiang-agent by name,
# and pip takes them from ./shared and ./agent. (A speaker box needs only those two: docs/agent.md.)
.venv/bin/python -m pip install -q --disable-pip-version-check -e ./shared -e ./agent -e ".${extra}"
