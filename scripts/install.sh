#!/usr/bin/env bash
# Fresh CPU machine -> ready .venv with ifbf, its test tools and InPlace-ABN (no CUDA packages).
# Usage: bash scripts/install.sh [VENV_DIR]        (default .venv; re-running is safe)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.venv}
PY=${PYTHON:-python3}
[[ -x $VENV/bin/python ]] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)
# torch first, pinned to the local CPU wheel: a looser request would pull CUDA torch (GBs).
"${PIP[@]}" -c constraints-cpu.txt torch
"${PIP[@]}" -c constraints-cpu.txt -e ".[dev]"
# inplace-abn ships only an sdist that compiles against the installed torch (C++ only on CPU, ~1-2 min).
"$VENV/bin/python" -c "import inplace_abn" 2>/dev/null ||
  "${PIP[@]}" -c constraints-cpu.txt --no-build-isolation "inplace-abn==1.1.0"
"$VENV/bin/python" -c "import ifbf.models, inplace_abn; print('ifbf installed in $VENV')"
