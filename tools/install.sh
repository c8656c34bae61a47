#!/usr/bin/env bash
# Set up the project's virtual environment (idempotent).
#
# Creates $VENV (default: .venv in the repository) with torch 2.13.0 (CPU),
# mmcv 2.1.0 compiled with its C++ ops, mmengine 0.10.7, mmdet 3.3.0 and this
# package (editable). The mmcv wheel is compiled once per machine (about 15 min
# on 2 cores) and kept in $FSNET_WHEEL_CACHE (default ~/.cache/fsnet-mmdet/wheels,
# outside the repository), so fresh clones on the same machine reuse it.
# A second run with nothing changed returns in seconds.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-$ROOT/.venv}"
CACHE="${FSNET_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/fsnet-mmdet/wheels}"

TORCH_VERSION=2.13.0
MMCV_VERSION=2.1.0
MMENGINE_VERSION=0.10.7
# torch 2.13 asks for setuptools>=77.0.3; mmcv's setup.py and mmengine's
# `mmdet::` config lookup import pkg_resources, which setuptools 81 removed.
SETUPTOOLS_SPEC='setuptools>=77.0.3,<81'

die() { printf '\ninstall: error: %s\n' "$*" >&2; exit 1; }
step() { printf 'install: %s\n' "$*"; }

# The stamp records what was installed; the hash covers every input of the install.
STAMP="$VENV/.fsnet-installed"
HASH="$(cat "$ROOT/tools/install.sh" "$ROOT/setup.py" | sha256sum | cut -d' ' -f1)"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$HASH" && -x "$VENV/bin/python" ]]; then
  step "environment up to date ($VENV)"
  exit 0
fi

command -v "$PYTHON" >/dev/null || die "'$PYTHON' not found. Install Python 3.11 or set PYTHON=/path/to/python3.11."
"$PYTHON" - <<'PY' || die "Python 3.11 is required (torch $TORCH_VERSION CPU and mmcv $MMCV_VERSION are built for it here); found $("$PYTHON" -V 2>&1). Set PYTHON=/path/to/python3.11."
import sys
sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)
PY

if [[ ! -x "$VENV/bin/python" ]]; then
  step "creating virtual environment $VENV"
  "$PYTHON" -m venv "$VENV" || die "could not create a virtual environment (is the 'venv' module installed? e.g. apt-get install python3-venv)."
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check)

pip_install() {
  "${PIP[@]}" install -q "$@" || die "pip could not install: $*
  Check that the package index is reachable (PyPI or the configured mirror) and retry 'make test'."
}

step "base packages: torch==$TORCH_VERSION (CPU), numpy, $SETUPTOOLS_SPEC, wheel, ninja"
pip_install "torch==$TORCH_VERSION" numpy "$SETUPTOOLS_SPEC" wheel ninja

if ! "$PY" -c "import mmcv, sys; sys.exit(mmcv.__version__ != '$MMCV_VERSION')" 2>/dev/null \
   || ! "$PY" -c "import mmcv._ext" 2>/dev/null; then
  mkdir -p "$CACHE"
  WHEEL="$(ls "$CACHE"/mmcv-"$MMCV_VERSION"-cp311-*.whl 2>/dev/null | head -n1 || true)"
  if [[ -z "$WHEEL" ]]; then
    command -v g++ >/dev/null || die "no C++ compiler: mmcv $MMCV_VERSION must be compiled with its ops. Install one (apt-get install g++) and retry."
    step "compiling mmcv $MMCV_VERSION with ops into $CACHE (once per machine; ~15 min on 2 cores)"
    TMP="$(mktemp -d "$CACHE/.build.XXXXXX")"
    trap 'rm -rf "$TMP"' EXIT
    # --no-build-isolation: mmcv's setup.py must see torch, or it silently builds without ops.
    MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
      "${PIP[@]}" wheel -q --no-deps --no-build-isolation --no-binary mmcv "mmcv==$MMCV_VERSION" -w "$TMP" \
      || die "building mmcv $MMCV_VERSION failed (see the compiler output above). It needs g++, network access to the package index and ~2 GB of memory."
    WHEEL_NAME="$(basename "$(ls "$TMP"/mmcv-*.whl)")"
    mv "$TMP/$WHEEL_NAME" "$CACHE/$WHEEL_NAME"   # atomic: a half-built wheel never lands in the cache
    WHEEL="$CACHE/$WHEEL_NAME"
  else
    step "reusing compiled mmcv wheel $WHEEL"
  fi
  pip_install "$WHEEL" "mmengine==$MMENGINE_VERSION"
fi
"$PY" -c "import mmcv._ext" 2>/dev/null || die "mmcv is installed without its compiled ops (No module named 'mmcv._ext'). Delete $CACHE/mmcv-*.whl and rerun to rebuild it."

step "mmengine, mmdet and fsnet-mmdet (editable)"
pip_install --no-build-isolation -e "$ROOT[tests,deploy]"

echo "$HASH" > "$STAMP"
step "done: $VENV"
