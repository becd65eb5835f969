#!/usr/bin/env bash
# Installs what scripts/test.sh needs, and only what is missing:
#   - Debian packages: zookeeper (3.8 jars, zkCli.sh, a JRE), zookeeper-bin (the
#     C client shell cli_st/cli_mt), python3-venv when python3 cannot make a venv;
#   - a Python venv at .venv with the pinned packages of tests/compat/requirements.txt.
# Idempotent: a second run with everything present takes well under a second.
# Runs as root (CI does) or through sudo. No stdin needed.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
VENV=${RK_VENV:-$ROOT/.venv}
REQ=$ROOT/tests/compat/requirements.txt
PY=${RK_PYTHON:-python3}

log() { printf '[setup] %s\n' "$*"; }

# --- Debian packages ---------------------------------------------------------
pkgs=()
if [[ ! -f /usr/share/java/zookeeper.jar || ! -x /usr/share/zookeeper/bin/zkCli.sh ]]; then
    pkgs+=(zookeeper)
fi
if ! command -v cli_st >/dev/null && ! command -v cli_mt >/dev/null \
    && [[ ! -x /usr/lib/zookeeper/bin/cli_st && ! -x /usr/lib/zookeeper/bin/cli_mt ]]; then
    pkgs+=(zookeeper-bin)
fi
if ! command -v java >/dev/null; then
    pkgs+=(default-jre-headless)
fi
if ! command -v "$PY" >/dev/null; then
    PY=/usr/bin/python3
    pkgs+=(python3 python3-venv)
elif ! "$PY" -c 'import ensurepip, venv' >/dev/null 2>&1; then
    # Debian's python3 needs python3-venv for `python3 -m venv`
    PY=/usr/bin/python3
    pkgs+=(python3-venv)
fi

if ((${#pkgs[@]})); then
    SUDO=()
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null || { echo "[setup] need root (or sudo) to install: ${pkgs[*]}" >&2; exit 1; }
        SUDO=(sudo -n)
    fi
    log "installing Debian packages: ${pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    timeout 600 "${SUDO[@]}" apt-get update -q </dev/null
    timeout 1200 "${SUDO[@]}" apt-get install -y -q --no-install-recommends "${pkgs[@]}" </dev/null
fi

[[ -f /usr/share/java/zookeeper.jar ]] || { echo "[setup] zookeeper.jar missing after install" >&2; exit 1; }
command -v java >/dev/null || { echo "[setup] java missing after install" >&2; exit 1; }

# --- Python venv -------------------------------------------------------------
stamp="$VENV/.rk-requirements"
want="$(sha256sum "$REQ" | cut -d' ' -f1) $("$PY" -c 'import sys; print(sys.version.split()[0])')"
if [[ -x $VENV/bin/python && -f $stamp && "$(cat "$stamp")" == "$want" ]] \
    && "$VENV/bin/python" -c 'import kazoo, pytest, pytest_timeout' >/dev/null 2>&1; then
    exit 0
fi
log "creating $VENV with $("$PY" --version 2>&1)"
"$PY" -m venv --clear "$VENV"
PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1 timeout 900 \
    "$VENV/bin/python" -m pip install -q -r "$REQ" </dev/null
"$VENV/bin/python" -c 'import kazoo, pytest, pytest_timeout'
echo "$want" >"$stamp"
log "venv ready: $("$VENV/bin/python" -m pytest --version 2>&1 | head -1)"
