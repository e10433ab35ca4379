#!/usr/bin/env bash
# Every CPU figure of docs/performance.md, in one go (about 30 minutes on the 2-core machine). Run it when the
# machine is quiet (`uptime`): timings on a loaded 2-core machine swing by 10x and more.
#
#     bash benchmarks/cpu_suite.sh [OUT]            # default OUT: benchmarks/results/cpu
#     SUITE="step ablation" bash benchmarks/cpu_suite.sh     # only some parts
set -u
OUT="${1:-benchmarks/results/cpu}"
PY="${PYTHON:-.venv/bin/python}"
SUITE="${SUITE:-flops step ablation packing compile loader evaluate sync precision asha}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$OUT"
has() { [[ " $SUITE " == *" $1 "* ]]; }
run() { echo "== $(date +%T) load $(cut -d' ' -f1-3 /proc/loadavg): $*"; "$PY" -m "$@" --out "$OUT"; }

has flops && run benchmarks.flops --setting published
if has step; then  # the project's step vs the published-style reference at demo size, twice each
    for threads in 1 2; do
        for rep in 1 2; do
            run benchmarks.step --setting demo --threads "$threads" --warmup 3 --steps 30 --tag "step_demo_t${threads}_r${rep}"
        done
    done
fi
if has ablation; then  # one change at a time, 1 thread (a demo trial's CPU share)
    for rep in 1 2; do
        run benchmarks.ablation --setting demo --threads 1 --steps 30 --variant fp32 --variant fp32,default-optim \
            --variant fp32,cl --variant bf16 --variant bf16,cl --tag "ablation_demo_t1_r${rep}"
    done
fi
has packing && run benchmarks.step --setting demo --no-reference --procs 2 --warmup 3 --steps 30 \
    --tag step_demo_procs2
if has compile; then  # runtime.compile: cold (empty inductor cache), then warm (the same cache, a new process)
    export TORCHINDUCTOR_CACHE_DIR="$(mktemp -d /tmp/inductor-cache.XXXXXX)"
    for cache in cold warm; do
        run benchmarks.step --setting demo --no-reference --compile --threads 1 --warmup 2 --steps 20 \
            --tag "step_demo_t1_compile_${cache}"
    done
    rm -rf "$TORCHINDUCTOR_CACHE_DIR"
    unset TORCHINDUCTOR_CACHE_DIR
fi
has loader && run benchmarks.loader --threads 1 --tag loader_demo_t1
if has evaluate; then
    run benchmarks.evaluate --setting demo --threads 1 --data datasets/synth --tag evaluate_demo_t1
    run benchmarks.evaluate --setting published --decode-only --decode 4 --threads 1 --tag decode_published_t1
fi
has sync && run benchmarks.sync_check --setting demo --threads 1 --tag sync_check_demo_t1
has precision && run benchmarks.precision --threads 1 --seeds 0,1 --variants fp32,bf16-cl --tag precision_demo_cpu_t1
if has asha; then  # the demo study with FIFO and ASHA, then with one more ASHA rung; one baseline for all four
    storage="$(mktemp -d /tmp/dastudy-asha-suite.XXXXXX)"
    run benchmarks.asha_efficiency --storage "$storage" --tag asha_efficiency_cpu
    run benchmarks.asha_efficiency --storage "$storage" --name asha-efficiency-fine --interval 20 \
        --tag asha_efficiency_cpu_interval20
    rm -rf "$storage"
fi
echo "== $(date +%T) done; load $(cut -d' ' -f1-3 /proc/loadavg)"
