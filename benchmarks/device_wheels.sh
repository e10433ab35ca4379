#!/usr/bin/env bash
# Packs what benchmarks/gpu_check.sh needs on the GPU machine and that machine lacks (no Ray, no Optuna, no network):
# into .whl/ (ignored by git through .git/info/exclude; carried with the device tool's carry = [".whl"]).
#
# The GPU machine runs CPython 3.12 on x86_64. Ray's wheel (79 MB) is larger than what may travel (64 MiB with the
# working tree), so Ray travels unpacked and repacked as one tar.xz without the parts a Tune study never loads:
# its Java jars (32 MB), RLlib, the LLM package and the dashboard's source maps (~26 MB in all). The other packages
# are the wheels Ray Tune, Optuna and dastudy need that the machine's image does not hold (measured 2026-12-06:
# ~6 MB). About two minutes (xz -9 on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >>.git/info/exclude
mkdir -p .whl
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
PIP=(python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp
     "${PLATFORMS[@]}" -d)
"${PIP[@]}" .whl jsonschema==4.26.0 jsonschema-specifications==2025.9.1 referencing==0.37.0 rpds-py==2026.9.1 \
    tensorboardX==2.6.5 optuna==5.0.0 SQLAlchemy==2.1.9 alembic==1.20.1 Mako==1.4.3 colorlog==6.12.0 \
    pypng==0.20220715.0 tomli_w==1.2.0 pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 \
    typing-inspection==0.4.5
if [ ! -f .whl/ray-2.60.0-slim-cp312.tar.xz ]; then
    tmp="$(mktemp -d)"
    trap 'rm -rf -- "$tmp"' EXIT
    "${PIP[@]}" "$tmp" ray==2.60.0
    mkdir "$tmp/tree"  # unzip, not python's zipfile: it keeps the exec bits of raylet and gcs_server
    (cd "$tmp/tree" && unzip -q "$tmp"/ray-2.60.0-*.whl \
        && rm -rf ray/jars ray/rllib ray/llm ray/dashboard/client/build/static/js/*.map \
        && tar -cf - . | xz -9 -T2 >"$OLDPWD/.whl/ray-2.60.0-slim-cp312.tar.xz")
fi
du -sh .whl
