#!/usr/bin/env bash
# The one prepared GPU check of issue 7 (docs/performance.md): about 5-6 minutes predicted on an H100; call it with
# the device tool's timeout_s = 600 (reports are merged after every command, so a cut-off call still returns them).
#
# Needs only python3 with torch (>= 2.4), torchvision, numpy and pillow: no Ray, no Optuna, no pypng, no tomli-w.
# Run from the repository root on the GPU machine:
#
#     bash benchmarks/gpu_check.sh
#
# Before the call, on the CPU machine, prepare the synthetic benchmark with 8-bit source labels (the GPU machine has
# no pypng to read the generated 16-bit ones) and carry it along (the device tool's carry = ["datasets/synth"]):
#
#     .venv/bin/dastudy data synth datasets/synth && .venv/bin/dastudy data prepare datasets/synth/source --skip-existing
#
# Without it the precision (mIoU) check is skipped. GPU_CHECK_REHEARSAL=1 runs the same commands at toy sizes on the
# CPU (about a minute), to check the script itself before spending device time. Results: $OUT/gpu_check.json (every benchmark's JSON),
# $OUT/gpu_check.md (every table) and $OUT/gpu_check.log (every command's output): three files, since the device
# tool brings back at most eight.
set -u
OUT="${OUT:-benchmarks/results/gpu}"
PY="${PYTHON:-python3}"
mkdir -p "$OUT"
WORK="$(mktemp -d /tmp/gpu_check.XXXXXX)"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
LOG="$OUT/gpu_check.log"
: >"$LOG"
START=$(date +%s)

log() { echo "[$(date +%T) +$(( $(date +%s) - START ))s] $*" | tee -a "$LOG"; }

# merge: every report so far into $OUT/gpu_check.json and gpu_check.md (after each benchmark, so that a call cut
# off by its time limit still brings back what was measured)
merge() {
    "$PY" - "$WORK" "$OUT" <<'EOF' >>"$LOG" 2>&1
import json, sys
from pathlib import Path
work, out = Path(sys.argv[1]), Path(sys.argv[2])
merged = {p.stem: json.loads(p.read_text()) for p in sorted(work.glob("*.json"))}
(out / "gpu_check.json").write_text(json.dumps(merged, indent=1, sort_keys=True) + "\n")
tables = [f"## {p.stem}\n\n{p.read_text()}" for p in sorted(work.glob("*.md"))]
(out / "gpu_check.md").write_text("\n".join(tables))
print(f"merged {len(merged)} reports into {out}")
EOF
}

# run NAME SECONDS MODULE ARGS...: one benchmark with a time limit; its JSON/markdown go to $WORK
run() {
    local name=$1 limit=$2
    shift 2
    log "start $name: $PY -m $* --out $WORK --tag $name"
    timeout "$limit" "$PY" -m "$@" --out "$WORK" --tag "$name" >>"$LOG" 2>&1
    log "end $name (exit $?)"
    merge
}

log "git $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
nvidia-smi --query-gpu=name,memory.total,memory.used,utilization.gpu,clocks.sm,clocks.max.sm,power.draw \
    --format=csv >>"$LOG" 2>&1
"$PY" -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, \
torch.cuda.get_device_name(0))" >>"$LOG" 2>&1

if [ "${GPU_CHECK_REHEARSAL:-0}" = 1 ]; then
    # the same commands at toy sizes on the CPU, to check this script before spending device time on it
    DEVICE=cpu
    STEP_SIZE=(--setting demo --source-size 64x32 --target-size 64x32 --ndf 4 --warmup 1 --steps 2 --block 1)
    EVAL_SIZE=(--setting demo --input-size 64x32 --label-size 96x48 --images 2 --repeats 1)
    SYNC_SIZE=(--setting demo --source-size 64x32 --target-size 64x32 --ndf 4 --steps 3)
    PRECISION_SIZE=(--small --data "$WORK/synth" --iterations 2 --baseline-iterations 2
                    --set 'eval.selection="val"' --set data.source.size=[64,32] --set data.target.size=[64,32]
                    --set data.val.size=[64,32])
    HAS_DATA=1
else
    DEVICE=cuda
    STEP_SIZE=(--setting published --warmup 5 --steps 15 --block 2)
    EVAL_SIZE=(--setting published --images 100 --repeats 3)
    SYNC_SIZE=(--setting published --steps 5)
    PRECISION_SIZE=(--data datasets/synth --set data.workers=4)
    HAS_DATA=0
    if [ -f datasets/synth/source/GT/LABELS_TRAINID/prepared.json ] || "$PY" -c "import png" 2>/dev/null; then
        HAS_DATA=1
    fi
fi

# 0. fractional GPUs through Ray (issue 20): a real `dastudy study run` of the adversarial trainable, 4 trials at
# 0.25 GPU against 1 trial at 1 GPU. The GPU machine has no Ray or Optuna: they travel in .whl/ (made on the CPU
# machine by benchmarks/device_wheels.sh: Ray without its Java jars, RLlib and LLM packages, as one tar.xz, and the
# pure-Python wheels Ray Tune and Optuna need), unpacked into a private site folder here.
if [ -d .whl ] && ! "$PY" -c "import ray, optuna" 2>/dev/null; then
    SITE="$WORK/site"
    log "installing Ray and Optuna from .whl into $SITE"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" .whl/*.whl >>"$LOG" 2>&1
    for t in .whl/*.tar.xz; do tar -xJf "$t" -C "$SITE" >>"$LOG" 2>&1; done
    export PYTHONPATH="$PYTHONPATH:$SITE"
    log "ray $("$PY" -c 'import ray; print(ray.__version__)' 2>>"$LOG"), optuna $("$PY" -c 'import optuna; print(optuna.__version__)' 2>>"$LOG")"
fi
if "$PY" -c "import ray, optuna, png, tomli_w" 2>/dev/null; then
    [ -f datasets/synth/manifest.json ] || "$PY" -m study.cli data synth datasets/synth >>"$LOG" 2>&1
    HAS_DATA=1
    if [ "$DEVICE" = cpu ]; then RAY_ARGS=(--device cpu --rehearsal); else RAY_ARGS=(--device cuda); fi
    run ray_fractional "${RAY_LIMIT:-330}" benchmarks.ray_fractional --data datasets/synth "${RAY_ARGS[@]}"
    cat "$WORK/ray_fractional.log" >>"$LOG" 2>/dev/null
else
    log "skip ray_fractional: Ray, Optuna, pypng or tomli-w missing (carry .whl)"
fi

STEP=(benchmarks.step --device "$DEVICE" --ref-batch 1 "${STEP_SIZE[@]}")
# 1. packing (the goal not met yet, so first after Ray): four processes of the bf16 step on one device vs one process
run step_bf16cl_b1_procs4 150 benchmarks.step --device "$DEVICE" "${STEP_SIZE[@]}" --precision bf16 \
    --channels-last --batch 1 --no-reference --procs 4
# 2. the published AdaptSegNet step: reference (fp32 eager, batch 1) vs the engine, in the same process
run step_fp32_b1 100 "${STEP[@]}" --precision fp32 --batch 1
run step_bf16cl_b1 100 "${STEP[@]}" --precision bf16 --channels-last --batch 1
run step_bf16cl_b4 120 "${STEP[@]}" --precision bf16 --channels-last --batch 4
# no host sync inside the step between log intervals; what the batch copies cost (prefetch decision)
run sync_check 60 benchmarks.sync_check --device "$DEVICE" "${SYNC_SIZE[@]}" --precision bf16 --channels-last --batch 4
# 3. evaluation throughput: 1024x512 inputs, logits upsampled to 2048x1024 labels (goal: 500 images <= 10 s)
run evaluate_bf16cl 90 benchmarks.evaluate --device "$DEVICE" "${EVAL_SIZE[@]}" --precision bf16 --channels-last \
    --decode 4
run evaluate_fp32 60 benchmarks.evaluate --device "$DEVICE" "${EVAL_SIZE[@]}" --precision fp32
# 4. does the fast path learn the same? demo adaptation fp32 vs bf16+channels_last, two seeds each
if [ "$HAS_DATA" = 1 ]; then
    run precision 150 benchmarks.precision --device "$DEVICE" "${PRECISION_SIZE[@]}" --seeds 0,1 \
        --variants fp32,bf16-cl
else
    log "skip precision: datasets/synth with prepared labels was not carried and pypng is missing"
fi

merge
rm -rf "$WORK"
log "done in $(( $(date +%s) - START )) s"
cat "$OUT/gpu_check.md"
