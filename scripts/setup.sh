#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment and install timm_u1 into it, editable, with the
# test and faiss extras. PyPI's torch for x86_64 Linux is the CUDA build, so the venv is ~6 GB (README,
# Install): it lives outside the clone and is shared by clones and CI runs. TIMM_U1_VENV overrides its
# place; `.venv` in the clone links to it.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${TIMM_U1_VENV:-$HOME/.cache/timm_u1/venv}"
PYTHON="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
    echo "creating venv at $VENV"
    mkdir -p "$(dirname "$VENV")"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip
fi
# torch first and pinned: these wheels lie on the build machines' disk; an unpinned torch would
# pull a multi-GB download.
if ! "$VENV/bin/python" -c "import torch, torchvision" 2>/dev/null; then
    "$VENV/bin/pip" install -q torch==2.14.1 torchvision==0.29.1
fi
"$VENV/bin/pip" install -q -e ".[dev,faiss]"
"$VENV/bin/python" -c "import timm_u1" # fail here, not later, if the install is broken
ln -sfn "$VENV" .venv
echo "timm_u1 installed in $VENV (linked as .venv)"
