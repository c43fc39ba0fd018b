#!/usr/bin/env bash
# Build the wheel, pip-install it into a fresh venv outside the clone, and run from that venv what a user
# runs: `timm-u1 --version`, every command's --help and the README's main job (`timm-u1 analyze`).
#
#   bash scripts/check_wheel.sh                       # torch and every dependency installed afresh (~6 GB)
#   bash scripts/check_wheel.sh --quick               # the main job on 16 images, statistics only
#   bash scripts/check_wheel.sh --deps-from .venv --quick   # dependencies seen from another venv (the suite)
#
# --deps-from makes the fresh venv see another venv's packages (a .pth file) instead of installing
# them: the wheel, its files and its console script are still the installed ones. The venv is removed
# at the end; its size is printed first.
set -euo pipefail
cd "$(dirname "$0")/.."
SOURCE="$PWD"
PYTHON="${PYTHON:-python3}"
DEPS_FROM=""
QUICK=0
while [ $# -gt 0 ]; do
    case "$1" in
        --deps-from) DEPS_FROM="$(cd "$2" && pwd -P)"; shift 2 ;;
        --quick) QUICK=1; shift ;;
        *) echo "check_wheel.sh: unknown option $1 (use --deps-from VENV, --quick)" >&2; exit 2 ;;
    esac
done

WORK="$(mktemp -d "${TMPDIR:-/tmp}/timm_u1_wheel.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
"$PYTHON" -m venv "$WORK/venv"
PIP=("$WORK/venv/bin/python" -m pip --disable-pip-version-check)
if [ -n "$DEPS_FROM" ]; then
    "$DEPS_FROM/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' \
        > "$("$WORK/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/deps.pth"
    "${PIP[@]}" wheel -q --no-deps --no-build-isolation -w "$WORK/dist" "$SOURCE"   # hatchling from the deps venv
else
    # torch pinned, as in scripts/setup.sh: these wheels lie on the build machines' disk
    "${PIP[@]}" install -q torch==2.14.1 torchvision==0.29.1
    "${PIP[@]}" wheel -q --no-deps -w "$WORK/dist" "$SOURCE"
fi
"${PIP[@]}" install -q "$WORK/dist"/timm_u1-*.whl

# run from outside the clone, with nothing of it on the path: only the installed wheel can answer
cd "$WORK"
unset PYTHONPATH
BIN="$WORK/venv/bin"
"$BIN/python" - <<'EOF'
import pathlib, sys, timm_u1
where = pathlib.Path(timm_u1.__file__).resolve()
assert where.is_relative_to(pathlib.Path(sys.prefix).resolve()), f'timm_u1 imported from {where}, not the wheel'
from importlib import metadata
package = where.parent
for shipped in ('py.typed', 'docs/math.md', 'model_cards/u1_model.md'):
    assert (package / shipped).is_file(), f'the wheel does not ship timm_u1/{shipped}'
licence = [f for f in metadata.files('timm_u1') if f.name == 'LICENSE']
assert licence and 'Apache License' in licence[0].read_text(), 'the wheel has no LICENSE'
assert metadata.version('timm_u1') == timm_u1.__version__
EOF
"$BIN/timm-u1" --version
"$BIN/timm-u1" --help > /dev/null
# every command's --help through the console script's function, in one interpreter (one torch import)
"$BIN/python" - <<'EOF'
import contextlib, io, timm_u1_launcher
for command in (['analyze'], ['memory', 'build'], ['memory', 'eval'], ['train'], ['timm-train'], ['compare'],
                ['finetune'], ['push']):
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        try:
            timm_u1_launcher.main([*command, '--help'])
        except SystemExit as e:
            assert e.code == 0, f'timm-u1 {" ".join(command)} --help exited {e.code}'
    assert 'examples:' in text.getvalue(), f'timm-u1 {" ".join(command)} --help has no examples'
print('every --help ran')
EOF
MAIN_JOB=("$BIN/timm-u1" analyze --output runs/analyze -q)
if [ "$QUICK" = 1 ]; then
    MAIN_JOB+=(--data photos --limit 16 --batch-size 8 --controls none --permutations 0)
fi
"${MAIN_JOB[@]}"
for report in runs/analyze/*/report.json; do
    "$BIN/python" -c 'import json, sys; assert json.load(open(sys.argv[1]))["meta"]["images"] > 0' "$report"
done
ls runs/analyze/*/report.md
echo "venv size: $(du -sh "$WORK/venv" | cut -f1)"
echo "check_wheel: the wheel installs and runs"
