#!/usr/bin/env bash
# One-shot GPU check of cgh (benchmarks/gpu_check.md): environment, the gpu-marked tests, step throughput of
# supervised / MoCo-v2 / ReSSL / CGH, the NCCL path (torchrun, then --resume) and an end-to-end demo run.
#
#   bash benchmarks/gpu_check.sh              on a GPU machine, from a clean checkout; stops by itself within 8 min
#   OUT=dir bash benchmarks/gpu_check.sh      write the results there (default benchmarks/results/gpu_check/)
#   bash benchmarks/gpu_check.sh --dry-run    every step on the CPU at tiny sizes (numbers are not GPU figures)
#
# Writes OUT/summary.md, OUT/results.json, OUT/log.txt and the per-step JSON it merges (8 files). Exit status 0 only when
# every step passed; a failing or timed-out step is named in the summary and makes the exit status 1.
# Environment: GPU_CHECK_BUDGET (seconds, default 460), E2E_STEPS (default 1280), PYTHON (an interpreter to use).
set -u -o pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SELF="$ROOT/benchmarks/gpu_check.sh"
HELPER="$ROOT/benchmarks/gpu_check.py"

# ---------------------------------------------------------------------------------------------------------------------
# One step's body, run as `bash gpu_check.sh --step NAME` under `timeout` (the variables below are exported).
# Each inner command is bounded again by what is left of the step (STEP_DEADLINE).

since() { local ms=$(( ($(date +%s%N) - $1) / 1000000 )); printf '%d.%03d' $(( ms / 1000 )) $(( ms % 1000 )); }
left() { echo $(( STEP_DEADLINE - $(date +%s) )); }
bounded() { local l; l=$(left); (( l > 1 )) || { echo "no time left in this step"; return 124; }; timeout -k 5 "$l" "$@"; }

step_env() {
    bounded "$PY" "$HELPER" env "$OUT_DIR/env.json" || return
    if [[ $DRY == 0 ]]; then
        "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 3)" \
            || { echo "torch sees no CUDA device (use --dry-run on a CPU)"; return 3; }
        command -v nvidia-smi >/dev/null && bounded nvidia-smi
    fi
    return 0
}

step_tests() {
    local rc
    bounded "$PY" -m pytest -q -p no:cacheprovider -rs tests/gpu -m gpu --junitxml="$WORK/junit.xml"
    rc=$?
    "$PY" "$HELPER" junit "$WORK/junit.xml" "$OUT_DIR/tests.json" || return
    # a GPU run must run every test; a dry run must skip every one (the one allowed skip)
    "$PY" - "$OUT_DIR/tests.json" "$DRY" <<'EOF' || return 5
import json, sys
t = json.load(open(sys.argv[1]))
dry = sys.argv[2] == "1"
n = t["passed"] + t["failed"] + t["skipped"] + t["errors"]
if n == 0:
    sys.exit("no gpu-marked test was collected")
if dry and t["skipped"] != n:
    sys.exit(f"dry run: expected every gpu test skipped, got {t}")
if not dry and t["skipped"]:
    sys.exit(f"{t['skipped']} gpu test(s) skipped on a GPU machine")
EOF
    if [[ $DRY == 1 && $rc == 0 ]]; then echo "DRY-RUN-SKIPPED"; fi
    return $rc
}

step_throughput() {
    local flag=()
    [[ $DRY == 1 ]] && flag=(--dry-run)
    bounded "$PY" "$HELPER" throughput "$OUT_DIR/throughput.json" "${flag[@]}" --deadline $(( STEP_DEADLINE - 10 ))
}

step_nccl() {
    local n dev backend rc s run="$WORK/ddp"
    if [[ $DRY == 1 ]]; then n=2; dev=cpu; backend=gloo; else
        n=$("$PY" -c "import torch; print(torch.cuda.device_count())"); dev=cuda; backend=nccl; fi
    local small=(data.synthetic_size=1024 data.synthetic_test_size=256 optim.batch_size=32 method.queue_size=256
                 optim.epochs=2 train.knn_every=0 train.progress=false train.log_every=10 "train.device=$dev")
    local phases=()
    echo "torchrun --standalone --nproc_per_node=$n ($backend): 30 steps"
    OMP_NUM_THREADS=1 bounded "$PY" -m torch.distributed.run --standalone --nproc_per_node="$n" -m cgh.cli pretrain \
        demo "${small[@]}" train.max_steps=30 "out_dir=$run"
    rc=$?; s=$("$PY" "$HELPER" ckpt-step "$run" 2>/dev/null || echo null)
    phases+=("{\"phase\": \"pretrain to 30 steps\", \"rc\": $rc, \"step\": $s, \"expected\": 30}")
    local rc2=1 s2=null
    if [[ $rc == 0 && $s == 30 ]]; then
        echo "torchrun --standalone --nproc_per_node=$n ($backend): --resume to 40 steps"
        OMP_NUM_THREADS=1 bounded "$PY" -m torch.distributed.run --standalone --nproc_per_node="$n" -m cgh.cli \
            pretrain --resume "$run" train.max_steps=40 "train.device=$dev"
        rc2=$?; s2=$("$PY" "$HELPER" ckpt-step "$run" 2>/dev/null || echo null)
        phases+=("{\"phase\": \"--resume to 40 steps\", \"rc\": $rc2, \"step\": $s2, \"expected\": 40}")
    fi
    local IFS=,
    echo "{\"backend\": \"$backend\", \"nproc\": $n, \"phases\": [${phases[*]}]}" >"$OUT_DIR/nccl.json"
    [[ $rc == 0 && $s == 30 && $rc2 == 0 && $s2 == 40 ]] || { echo "NCCL path failed: see $OUT_DIR/nccl.json"; return 1; }
}

step_e2e() {
    local run="$WORK/e2e" log="$WORK/e2e.log" rc t0 args
    if [[ $DRY == 1 ]]; then
        args=(train.device=cpu model.width=8 data.synthetic_size=256 data.synthetic_test_size=128 optim.batch_size=32
              method.queue_size=128 optim.epochs=3 train.knn_every=1 train.max_steps=20)
    else
        args=(train.device=cuda train.knn_every=2 "train.max_steps=${E2E_STEPS:-1280}")
    fi
    t0=$(date +%s%N)
    bounded "$PY" -m cgh.cli pretrain demo "${args[@]}" train.progress=false "out_dir=$run" 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    "$PY" "$HELPER" e2e-record "$run" "$log" "$rc" "$(since "$t0")" "$OUT_DIR/e2e.json"
    return "$rc"
}

if [[ "${1:-}" == "--step" ]]; then
    cd "$ROOT" || exit 1
    "step_$2"
    exit $?
fi

# ---------------------------------------------------------------------------------------------------------------------
# The driver.

DRY=0
for arg in "$@"; do
    case "$arg" in
        --dry-run) DRY=1 ;;
        -h|--help) sed -n '2,12p' "$SELF"; exit 0 ;;
        *) echo "unknown argument $arg (expected --dry-run)" >&2; exit 2 ;;
    esac
done
cd "$ROOT" || exit 1
OUT_DIR="${OUT:-$ROOT/benchmarks/results/gpu_check}"
mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
rm -f "$OUT_DIR"/{summary.md,results.json,log.txt,steps.tsv,env.json,tests.json,throughput.json,nccl.json,e2e.json}
WORK="$(mktemp -d "${TMPDIR:-/tmp}/cgh_gpu_check.XXXXXX")"
BUDGET="${GPU_CHECK_BUDGET:-460}"
START=$(date +%s)
LOG="$OUT_DIR/log.txt"
export ROOT HELPER OUT_DIR WORK DRY PYTHONUNBUFFERED=1 E2E_STEPS="${E2E_STEPS:-1280}"
# the dry run is the CPU path, even on a GPU machine; one thread each: on shared cores, spinning OpenMP threads make
# small ops many times slower (tests/conftest.py)
[[ $DRY == 1 ]] && export CUDA_VISIBLE_DEVICES="" OMP_NUM_THREADS=1

say() { echo "$*" | tee -a "$LOG"; }

# run_step NAME LIMIT: the step's body under `timeout`, bounded by what is left of the budget (less the summary's)
run_step() {
    local name=$1 limit=$2 remaining lim t0 rc status note=""
    remaining=$(( BUDGET - ($(date +%s) - START) - 15 ))
    lim=$(( limit < remaining ? limit : remaining ))
    t0=$(date +%s%N)
    if (( lim < 5 )); then
        rc=124; status="FAIL (time budget spent before it started)"
        say "== $name: not started, the time budget is spent"
    else
        say "== $name (limit ${lim} s, $(( $(date +%s) - START )) s into the check)"
        STEP_DEADLINE=$(( $(date +%s) + lim )) timeout -k 10 "$lim" bash "$SELF" --step "$name" 2>&1 \
            | tee -a "$LOG" | tee "$WORK/$name.out"
        rc=${PIPESTATUS[0]}
        if [[ $rc == 0 ]]; then status=ok
        elif [[ $rc == 124 || $rc == 137 ]]; then status="FAIL (timeout)"
        elif [[ $name == throughput && $rc == 4 ]]; then status="INCOMPLETE (time budget: see its table)"
        else status=FAIL; fi
        if [[ $rc == 0 ]] && grep -q "^DRY-RUN-SKIPPED" "$WORK/$name.out"; then
            status="ok (skipped: dry run)"; note="gpu-marked tests skipped on the CPU, as expected"
        fi
        [[ $rc != 0 ]] && note="see log.txt, step $name"
    fi
    printf '%s\t%s\t%d\t%.1f\t%s\n' "$name" "$status" "$rc" "$(since "$t0")" "$note" \
        >>"$OUT_DIR/steps.tsv"
    say "== $name: $status (exit $rc)"
}

# --- setup: .venv when it has everything, else the machine's torch with cgh from src/ (and missing packages), else
# the Makefile's `make install` (which needs the package registry)
setup() {
    local need='import torch, kornia, yaml, numpy, PIL, tqdm, sklearn, scipy, matplotlib, pytest, hypothesis, cgh'
    if [[ -n "${PYTHON:-}" ]]; then PY=$PYTHON
    elif [[ -x .venv/bin/python ]] && .venv/bin/python -c "$need" 2>/dev/null; then PY=$ROOT/.venv/bin/python
    elif command -v python3 >/dev/null && python3 -c "import torch" 2>/dev/null; then PY=$(command -v python3)
    else
        say "no python with torch: make install (creates .venv, installs torch==2.13.0 and cgh[dev])"
        make install 2>&1 | tee -a "$LOG" || return 1
        PY=$ROOT/.venv/bin/python
    fi
    if ! "$PY" -c "import cgh" 2>/dev/null; then  # cgh from the source tree (its presets are package data in src/)
        export PYTHONPATH="$ROOT/src:$ROOT/.venv/gpu-site${PYTHONPATH:+:$PYTHONPATH}"
    fi
    local missing
    missing=$("$PY" - <<'EOF'
import importlib.util
names = {"kornia": "kornia kornia_rs", "yaml": "pyyaml", "numpy": "numpy", "PIL": "pillow", "tqdm": "tqdm",
         "sklearn": "scikit-learn", "scipy": "scipy", "matplotlib": "matplotlib", "pytest": "pytest",
         "hypothesis": "hypothesis", "simplejpeg": "simplejpeg"}
print(" ".join(v for k, v in names.items() if importlib.util.find_spec(k) is None))
EOF
)
    if [[ -n "$missing" ]]; then
        # --no-deps: never let pip replace the machine's torch; offline, wheels from $CGH_WHEELS, .whl/ or
        # .venv/gpu-wheels/ (benchmarks/gpu_check.md says how to fetch them)
        local wheels="${CGH_WHEELS:-}" src=() w
        for w in "$ROOT/.whl" "$ROOT/.venv/gpu-wheels"; do [[ -z "$wheels" && -d "$w" ]] && wheels=$w; done
        [[ -n "$wheels" ]] && src=(--no-index --find-links "$wheels")
        say "installing into .venv/gpu-site: $missing"
        # shellcheck disable=SC2086
        "$PY" -m pip install -q --no-deps --no-compile --target "$ROOT/.venv/gpu-site" "${src[@]}" $missing \
            2>&1 | tee -a "$LOG" || return 1
    fi
    export PYTHONPATH="$ROOT/src:$ROOT/.venv/gpu-site${PYTHONPATH:+:$PYTHONPATH}"
    "$PY" -c "$need; print('python', __import__('sys').executable, 'torch', torch.__version__, 'cgh', cgh.__file__)" \
        2>&1 | tee -a "$LOG"
}

say "cgh GPU check $( [[ $DRY == 1 ]] && echo '(DRY RUN on the CPU)' ), budget ${BUDGET} s, results in $OUT_DIR"
t0=$(date +%s%N)
if setup; then
    printf 'setup\tok\t0\t%.1f\t%s\n' "$(since "$t0")" "$PY" >>"$OUT_DIR/steps.tsv"
    export PY
    if [[ $DRY == 1 ]]; then
        run_step env 30; run_step tests 60; run_step throughput 120; run_step nccl 90; run_step e2e 150
    else
        # the throughput gets what the first steps left, less what the last two need (their own limits)
        run_step env 30; run_step tests 110
        run_step throughput $(( BUDGET - ($(date +%s) - START) - 15 - 75 - 110 )); run_step nccl 75; run_step e2e 150
    fi
    flag=(); [[ $DRY == 1 ]] && flag=(--dry-run)
    "$PY" "$HELPER" summary "$OUT_DIR" "${flag[@]}" >/dev/null
    rc=$?
    # steps.tsv is in results.json now: 8 files, what the device tool brings back
    [[ -f "$OUT_DIR/results.json" ]] && mv "$OUT_DIR/steps.tsv" "$WORK/steps.tsv"
else
    printf 'setup\tFAIL\t1\t%.1f\tno usable Python environment (see log.txt)\n' \
        "$(since "$t0")" >>"$OUT_DIR/steps.tsv"
    rc=1
fi
if [[ -f "$OUT_DIR/summary.md" ]]; then cat "$OUT_DIR/summary.md"; else cat "$OUT_DIR/steps.tsv"; fi
say "gpu_check: $( [[ $rc == 0 ]] && echo PASS || echo FAIL ) in $(( $(date +%s) - START )) s; $OUT_DIR/summary.md"
rm -rf "$WORK"
exit $rc
