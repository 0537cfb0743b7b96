#!/usr/bin/env bash
# One-shot GPU check of cgh (benchmarks/gpu_check.md), in this order: environment, eager step throughput (four methods,
# each on its own recipe, and the split-BN / channels-last variants), the gpu-marked tests but the compile test, a short
# CUDA pretraining run and its --resume (torchrun), the compile test, and compiled CGH if time is left.
#
#   bash benchmarks/gpu_check.sh              on a GPU machine, from a clean checkout; stops by itself within ~6.5 min
#   OUT=dir bash benchmarks/gpu_check.sh      write the results there (default benchmarks/results/gpu_check/)
#   bash benchmarks/gpu_check.sh --dry-run    every step on the CPU at tiny sizes (numbers are not GPU figures)
#
# Writes OUT/summary.md, results.json, log.txt, env.json, throughput.json, tests.json, junit.xml, pretrain.json (8
# files). Exit status 0 when no step failed (a step skipped for lack of time is reported as skipped, not a failure);
# a failing or timed-out step is named in the summary and makes the exit status 1.
# Environment: GPU_CHECK_BUDGET (seconds, default 380), PYTHON (an interpreter to use), CGH_WHEELS (a folder of wheels
# for the packages the interpreter lacks; default .whl/ or .venv/gpu-wheels/).
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

step_throughput() {  # eager rows, each written to throughput.json as soon as it is measured
    local flag=()
    [[ $DRY == 1 ]] && flag=(--dry-run)
    bounded "$PY" "$HELPER" throughput "$OUT_DIR/throughput.json" "${flag[@]}" --deadline $(( STEP_DEADLINE - 10 ))
}

# run_pytest PHASE TEST_TIMEOUT ARGS...: gpu-marked tests under benchmarks/gpu_check_pytest.py (a time limit per test;
# each result on disk at once, in WORK/PHASE.jsonl and OUT/junit.xml), then their record in OUT/tests.json
run_pytest() {
    local phase=$1 per_test=$2 rc dry=()
    shift 2
    [[ $DRY == 1 ]] && dry=(--dry-run)
    rm -f "$WORK/$phase.jsonl"
    GPU_CHECK_RESULTS="$WORK/$phase.jsonl" GPU_CHECK_JUNIT="$OUT_DIR/junit.xml" GPU_CHECK_TEST_TIMEOUT=$per_test \
        PYTHONPATH="$ROOT/benchmarks:$PYTHONPATH" \
        bounded "$PY" -m pytest -q -p no:cacheprovider -p gpu_check_pytest -rs -m gpu "$@"
    rc=$?
    # recorded whatever pytest did (failed, timed out, killed): what finished is in the JSON lines
    "$PY" "$HELPER" tests-record "$WORK/$phase.jsonl" "$OUT_DIR/tests.json" "$phase" "${dry[@]}" || return 5
    if [[ $DRY == 1 && $rc == 0 ]]; then echo "DRY-RUN-SKIPPED"; fi
    return $rc
}

step_tests() {  # every gpu test but the compile test, which runs after the pretraining run
    run_pytest tests 60 tests/gpu --deselect tests/gpu/test_gpu.py::test_compile_matches_eager
}

step_compile_test() {
    run_pytest compile $(( $(left) - 10 )) tests/gpu/test_gpu.py::test_compile_matches_eager
}

step_pretrain_resume() {
    # torchrun with one process per GPU. With one GPU (the lent machine) the world size is 1: cgh creates no process
    # group (cgh/runtime/dist.py), so this exercises the torchrun launch, CUDA training with the kNN monitor, the checkpoint
    # and --resume, not NCCL; with several GPUs it is DDP over NCCL. The dry run launches one CPU process likewise.
    local n dev rc s run="$WORK/pretrain" log="$WORK/pretrain.log" what
    if [[ $DRY == 1 ]]; then n=1; dev=cpu; else
        n=$("$PY" -c "import torch; print(torch.cuda.device_count())"); dev=cuda; fi
    if (( n > 1 )); then what="torchrun, $n processes on $dev: DDP over NCCL"; else
        what="torchrun, 1 process on $dev: world size 1, no process group (launch, training, kNN monitor, resume)"
    fi
    local small=(data.synthetic_size=640 data.synthetic_test_size=256 optim.batch_size=32 method.queue_size=256
                 optim.epochs=2 train.knn_every=1 train.progress=false train.log_every=10 "train.device=$dev")
    [[ $DRY == 1 ]] && small+=(model.width=8)
    local phases=()
    echo "$what: 30 steps"
    OMP_NUM_THREADS=1 bounded "$PY" -m torch.distributed.run --standalone --nproc_per_node="$n" -m cgh.cli pretrain \
        demo "${small[@]}" train.max_steps=30 "out_dir=$run" 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}; s=$("$PY" "$HELPER" ckpt-step "$run" 2>/dev/null || echo null)
    phases+=("{\"phase\": \"pretrain to 30 steps\", \"rc\": $rc, \"step\": $s, \"expected\": 30}")
    local rc2=1 s2=null
    if [[ $rc == 0 && $s == 30 ]]; then
        echo "$what: --resume to 40 steps"
        OMP_NUM_THREADS=1 bounded "$PY" -m torch.distributed.run --standalone --nproc_per_node="$n" -m cgh.cli \
            pretrain --resume "$run" train.max_steps=40 "train.device=$dev" 2>&1 | tee -a "$log"
        rc2=${PIPESTATUS[0]}; s2=$("$PY" "$HELPER" ckpt-step "$run" 2>/dev/null || echo null)
        phases+=("{\"phase\": \"--resume to 40 steps\", \"rc\": $rc2, \"step\": $s2, \"expected\": 40}")
    fi
    local IFS=,
    echo "[${phases[*]}]" >"$WORK/phases.json"
    "$PY" "$HELPER" pretrain-record "$run" "$log" "$WORK/phases.json" "$what" "$OUT_DIR/pretrain.json"
    [[ $rc == 0 && $s == 30 && $rc2 == 0 && $s2 == 40 ]] || { echo "pretrain/resume failed: see pretrain.json"; return 1; }
}

step_compiled_throughput() {  # compiled CGH ResNet-50 b256 appended to throughput.json, if the time left allows
    local flag=()
    [[ $DRY == 1 ]] && flag=(--dry-run)
    bounded "$PY" "$HELPER" throughput "$OUT_DIR/throughput.json" --compiled "${flag[@]}" \
        --deadline $(( STEP_DEADLINE - 10 ))
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
        -h|--help) sed -n '2,14p' "$SELF"; exit 0 ;;
        *) echo "unknown argument $arg (expected --dry-run)" >&2; exit 2 ;;
    esac
done
cd "$ROOT" || exit 1
OUT_DIR="${OUT:-$ROOT/benchmarks/results/gpu_check}"
mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
for f in summary.md results.json log.txt env.json throughput.json tests.json junit.xml pretrain.json steps.tsv; do
    rm -f "${OUT_DIR:?}/$f"
done
WORK="$(mktemp -d "${TMPDIR:-/tmp}/cgh_gpu_check.XXXXXX")"
BUDGET="${GPU_CHECK_BUDGET:-380}"
START=$(date +%s)
LOG="$OUT_DIR/log.txt"
export ROOT HELPER OUT_DIR WORK DRY PYTHONUNBUFFERED=1
# the dry run is the CPU path, even on a GPU machine; one thread each: on shared cores, spinning OpenMP threads make
# small ops many times slower (tests/conftest.py)
[[ $DRY == 1 ]] && export CUDA_VISIBLE_DEVICES="" OMP_NUM_THREADS=1

say() { echo "$*" | tee -a "$LOG"; }
left_in_budget() { echo $(( BUDGET - ($(date +%s) - START) - 15 )); }  # 15 s kept for the summary

# run_step NAME LIMIT [whole]: the step's body under `timeout`, bounded by what is left of the budget; with "whole" it
# starts only when its whole LIMIT is left. A step the budget leaves no time for is "skipped (time budget)": reported
# as such, not a failure. A step that errors, or runs past its limit, is a failure.
run_step() {
    local name=$1 limit=$2 whole=${3:-} remaining lim t0 rc status note=""
    remaining=$(left_in_budget)
    lim=$(( limit < remaining ? limit : remaining ))
    t0=$(date +%s%N)
    if (( lim < 5 )) || [[ -n $whole && $remaining -lt $limit ]]; then
        rc=0; status="skipped (time budget)"; note="$(( remaining > 0 ? remaining : 0 )) s of the budget left"
        say "== $name: skipped, $note"
    else
        say "== $name (limit ${lim} s, $(( $(date +%s) - START )) s into the check)"
        STEP_DEADLINE=$(( $(date +%s) + lim )) timeout -k 10 "$lim" bash "$SELF" --step "$name" 2>&1 \
            | tee -a "$LOG" | tee "$WORK/$name.out"
        rc=${PIPESTATUS[0]}
        if [[ $rc == 0 ]]; then status=ok
        elif [[ $rc == 124 || $rc == 137 ]]; then status="FAIL (timeout)"
        else status=FAIL; fi
        if [[ $rc == 0 ]] && grep -q "^DRY-RUN-SKIPPED" "$WORK/$name.out"; then
            status="ok (skipped: dry run)"; note="gpu-marked tests skipped on the CPU, as expected"
        fi
        if [[ $rc == 0 ]] && grep -q "^SKIPPED-DRY-RUN" "$WORK/$name.out"; then
            status="skipped (dry run)"; note="compiling takes minutes on the CPU: the GPU run does it"
        fi
        [[ $rc != 0 ]] && note="see log.txt, step $name"
    fi
    printf '%s\t%s\t%d\t%.1f\t%s\n' "$name" "$status" "$rc" "$(since "$t0")" "$note" >>"$OUT_DIR/steps.tsv"
    say "== $name: $status (exit $rc)"
}

MISSING_PY='
import importlib.util
names = {"kornia": "kornia kornia_rs", "yaml": "pyyaml", "numpy": "numpy", "PIL": "pillow", "tqdm": "tqdm",
         "sklearn": "scikit-learn", "scipy": "scipy", "matplotlib": "matplotlib", "pytest": "pytest",
         "hypothesis": "hypothesis"}
print(" ".join(v for k, v in names.items() if importlib.util.find_spec(k) is None))
'

# --- setup: $PYTHON; else .venv when it has everything; else the machine's python3 with torch (a GPU image's CUDA
# build), with cgh from src/ and the packages it lacks installed from carried wheels. Nothing is fetched from the
# network: without a wheels folder, a missing package fails the setup at once.
setup() {
    local need='import torch, kornia, yaml, numpy, PIL, tqdm, sklearn, scipy, matplotlib, pytest, hypothesis, cgh'
    if [[ -n "${PYTHON:-}" ]]; then PY=$PYTHON
    elif [[ -x .venv/bin/python ]] && .venv/bin/python -c "$need" 2>/dev/null; then PY=$ROOT/.venv/bin/python
    elif command -v python3 >/dev/null && python3 -c "import torch" 2>/dev/null; then PY=$(command -v python3)
    else
        say "no Python with torch: set PYTHON, or make install first (this check installs nothing from the network)"
        return 1
    fi
    local ver site wheels="${CGH_WHEELS:-}" w missing
    ver=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")') || return 1
    site="$ROOT/.venv/gpu-site-py$ver"  # per Python version: a 3.12 wheel's binary must not shadow a 3.11 venv's
    PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
    [[ -d "$site" ]] && PYTHONPATH="$site:$PYTHONPATH"
    export PYTHONPATH
    for w in "$ROOT/.whl" "$ROOT/.venv/gpu-wheels"; do [[ -z "$wheels" && -d "$w" ]] && wheels=$w; done
    missing=$("$PY" -c "$MISSING_PY") || return 1
    if [[ -n "$missing" ]]; then
        if [[ -z "$wheels" || ! -d "$wheels" ]]; then
            say "missing: $missing; and no wheels folder (\$CGH_WHEELS, .whl/ or .venv/gpu-wheels/): fetch the" \
                "wheels as benchmarks/gpu_check.md says and carry the folder; nothing is fetched from the network"
            return 1
        fi
        say "installing into $site from $wheels (no network, no dependencies): $missing"
        # shellcheck disable=SC2086
        "$PY" -m pip install -q --no-index --find-links "$wheels" --no-deps --no-compile --no-cache-dir \
            --target "$site" $missing 2>&1 | tee -a "$LOG" || return 1
        [[ ":$PYTHONPATH:" == *":$site:"* ]] || export PYTHONPATH="$site:$PYTHONPATH"
    fi
    # simplejpeg is optional (Pillow decodes JPEGs without it): installed when its wheel was carried
    if [[ -n "$wheels" ]] && compgen -G "$wheels/simplejpeg-*" >/dev/null && ! "$PY" -c "import simplejpeg" 2>/dev/null
    then
        "$PY" -m pip install -q --no-index --find-links "$wheels" --no-deps --no-compile --no-cache-dir \
            --target "$site" simplejpeg 2>&1 | tee -a "$LOG" || say "simplejpeg not installed: Pillow decodes JPEGs"
        [[ ":$PYTHONPATH:" == *":$site:"* ]] || export PYTHONPATH="$site:$PYTHONPATH"
    fi
    "$PY" -c "$need; print('python', __import__('sys').executable, 'torch', torch.__version__, 'cgh', cgh.__file__)" \
        2>&1 | tee -a "$LOG"
    return "${PIPESTATUS[0]}"
}

say "cgh GPU check $( [[ $DRY == 1 ]] && echo '(DRY RUN on the CPU)' ), budget ${BUDGET} s, results in $OUT_DIR"
t0=$(date +%s%N)
if setup; then
    printf 'setup\tok\t0\t%.1f\t%s\n' "$(since "$t0")" "$PY" >>"$OUT_DIR/steps.tsv"
    export PY PYTHONPATH
    run_step env 40
    # the eager throughput gets what is left after the two steps that must follow it (tests 80 s, pretrain 75 s)
    tp=$(( $(left_in_budget) - 80 - 75 ))
    run_step throughput $(( tp < 150 ? tp : 150 ))
    run_step tests 80
    run_step pretrain_resume 75
    # the compile test gets all that is left, once at least 100 s are (compiling takes 1-3 min); compiled CGH the rest
    run_step compile_test "$(( $(left_in_budget) > 100 ? $(left_in_budget) : 100 ))" whole
    run_step compiled_throughput "$(left_in_budget)"
    flag=(); [[ $DRY == 1 ]] && flag=(--dry-run)
    "$PY" "$HELPER" summary "$OUT_DIR" "${flag[@]}" >/dev/null
    rc=$?
    # steps.tsv is in results.json now: 8 files at most, what the device tool brings back
    [[ -f "$OUT_DIR/results.json" ]] && mv "$OUT_DIR/steps.tsv" "$WORK/steps.tsv"
else
    printf 'setup\tFAIL\t1\t%.1f\tno usable Python environment (see log.txt)\n' \
        "$(since "$t0")" >>"$OUT_DIR/steps.tsv"
    rc=1
fi
if [[ -f "$OUT_DIR/summary.md" ]]; then cat "$OUT_DIR/summary.md"; else cat "$OUT_DIR/steps.tsv"; fi
report="$OUT_DIR/summary.md"; [[ -f "$report" ]] || report="$OUT_DIR/steps.tsv and $LOG"
say "gpu_check: $( [[ $rc == 0 ]] && echo PASS || echo FAIL ) in $(( $(date +%s) - START )) s; $report"
# every file that comes back stays under the device tool's 16 MiB
if (( $(stat -c %s "$LOG" 2>/dev/null || echo 0) > 15000000 )); then
    tail -c 15000000 "$LOG" >"$WORK/log.tail" && mv "$WORK/log.tail" "$LOG"
fi
rm -rf "$WORK"
exit $rc
