#!/usr/bin/env bash
# The one script to run on a GPU machine (no network; its own torch/triton/Python, e.g. Python 3.12 + torch 2.11),
# within 10 minutes: a deadline caps every step's timeout (steps that no longer fit are skipped and say so), and
# the summary is written as it goes and printed last, so a cut-short run still reports what finished. The last
# summary line names every step that did not run (skipped, failed to start, or a dry run).
#
#  0. preflight: the Python modules the build and the benchmarks need (setuptools, ninja, pytest-benchmark), named
#     when missing (there is no network to fetch them)
#  1. build ncsn_fast._C against the machine's torch, CUDA required (NCSN_FAST_BUILD_CUDA=1: no CPU-only build
#     that would let every later step pass without a .cu kernel)
#  2. `ncsn-fast doctor`: versions, the build (CUDA archs), every op x backend x dtype x layout, the model
#  3. compute-sanitizer memcheck and racecheck over both CUDA ops, forward and backward (benchmarks/cuda_sanitize.py;
#     it fails when the GPU is there but the CUDA kernels are not)
#  4. the GPU tests (pytest -m cuda; budgets cover cold Triton and torch.compile)
#  5. benchmarks: the op, the sde/Langevin updates, the model forward (fp32 and bf16 providers; ceilings of this
#     GPU measured in the same run), the inference network eager/jit/aot with and without CUDA graphs
#     (scripts/bench_inference.py), sampling the bundled model (fp32 and bf16), Table 6
#
#   bash benchmarks/gpu_check.sh [--dry-run] [OUT_DIR]   # OUT_DIR defaults to $OUT, else ./gpu_check_out
#
# --dry-run (or GPU_CHECK_DRY_RUN=1) runs the preflight only and reports every other step as not run: the
# script's own check, runnable without a GPU (tests/test_gpu_check.py).
set -uo pipefail
cd "$(dirname "$0")/.."
DRY_RUN="${GPU_CHECK_DRY_RUN:-0}"
if [[ "${1:-}" == "--dry-run" ]]; then
  DRY_RUN=1
  shift
fi
OUT_DIR="${1:-${OUT:-gpu_check_out}}"
mkdir -p "$OUT_DIR"
PY="${PYTHON:-python}"
export MAX_JOBS="${MAX_JOBS:-$(nproc)}"
export PYTHONUNBUFFERED=1
summary="$OUT_DIR/summary.txt"
: >"$summary"
not_run=()
note() { echo "$*" | tee -a "$summary" >/dev/null; }
deadline=$(($(date +%s) + ${GPU_CHECK_SECONDS:-570}))
# budget WANT: WANT seconds, or what is left before the deadline (less 15 s for the summary); 0 when nothing is
budget() {
  local left=$((deadline - $(date +%s) - 15))
  if ((left < 10)); then echo 0; elif (($1 < left)); then echo "$1"; else echo "$left"; fi
}
# skip NAME WHY: a step that did not run, in the summary and in the closing list
skip() {
  note "$1: NOT RUN ($2)"
  not_run+=("$1")
}
# step NAME WANT LOG CMD...: run CMD with the budgeted timeout, its output in LOG, one summary line from its tail
step() {
  local name=$1 want=$2 log=$3
  shift 3
  if ((DRY_RUN)); then
    skip "$name" "dry run; would run: $* (up to ${want} s)"
    return
  fi
  local t
  t=$(budget "$want")
  if ((t == 0)); then
    skip "$name" "no time left before the 10-minute deadline"
    return
  fi
  local start=$(date +%s) rc
  timeout "$t" "$@" >"$log" 2>&1
  rc=$?
  local took=$(($(date +%s) - start)) verdict=ok
  ((rc == 124)) && verdict="TIMED OUT after ${t} s"
  ((rc == 126 || rc == 127)) && not_run+=("$name") && verdict="DID NOT START (exit $rc: command not found)"
  ((rc != 0 && rc != 124 && rc != 126 && rc != 127)) && verdict="FAILED (exit $rc)"
  note "$name: $verdict in ${took} s; $(grep -v '^\s*$' "$log" | tail -1 | cut -c1-150)"
}

note "== $(date -u +%FT%TZ) $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -1)"
((DRY_RUN)) && note "== dry run: preflight only, no step runs"

# 0. Preflight: what the steps below import or call, named when missing (no network: nothing is installed here).
missing=$("$PY" - <<'PY' 2>&1
import importlib.util, shutil
need = {"setuptools": "the build", "pytest": "the tests", "pytest_benchmark": "the benchmarks", "torch": "everything"}
gone = [f"{m} ({why})" for m, why in need.items() if importlib.util.find_spec(m) is None]
if shutil.which("ninja") is None:  # torch's build falls back to one-file-at-a-time without it
    gone.append("ninja on PATH (the build, parallel nvcc)")
print("; ".join(gone))
PY
)
if [[ $? -ne 0 ]]; then
  note "preflight: $PY cannot run: $missing"
elif [[ -n "$missing" ]]; then
  note "preflight: MISSING $missing (steps that need them will fail; install them from a wheel folder)"
else
  note "preflight: ok (setuptools, ninja, pytest, pytest-benchmark, torch present)"
fi

# 1. Build against the machine's own torch (no build isolation: there is no network to fetch build deps), CUDA
# required: without nvcc or a CUDA torch the build fails instead of producing a CPU-only _C.
step "build" 240 "$OUT_DIR/build.log" env NCSN_FAST_BUILD_CUDA=1 "$PY" -m pip install --no-build-isolation --no-deps -e .

# 2. The doctor first: what this machine is and whether every kernel computes correctly here (exit 1 names rows).
# Cold Triton kernels and the compiled model take minutes on a fresh machine.
step "doctor" 150 "$OUT_DIR/doctor.log" "$PY" -m ncsn_fast.cli doctor --json "$OUT_DIR/doctor.json"
grep -E "^  (torch|CUDA|cuda:|triton|ncsn_fast._C|bf16)|^FAIL" "$OUT_DIR/doctor.log" 2>/dev/null | head -20 >>"$summary"

# 3. compute-sanitizer over both CUDA ops (forward and backward, odd shapes, every dtype and layout).
SANITIZER=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || true)
for tool in memcheck racecheck; do
  if [[ -z "$SANITIZER" ]] && ((!DRY_RUN)); then
    skip "compute-sanitizer $tool" "compute-sanitizer not on the PATH nor in /usr/local/cuda/bin"
    continue
  fi
  # Without the caching allocator every tensor is its own cudaMalloc, so memcheck sees an overrun past a tensor's
  # end (inside a cached block it would be in bounds and silent).
  step "compute-sanitizer $tool" 60 "$OUT_DIR/sanitizer_$tool.log" env PYTORCH_NO_CUDA_MEMORY_CACHING=1 \
    "${SANITIZER:-compute-sanitizer}" --tool "$tool" --error-exitcode 1 "$PY" benchmarks/cuda_sanitize.py
  grep -m3 -E "ERROR SUMMARY|RACECHECK SUMMARY|Invalid|Race" "$OUT_DIR/sanitizer_$tool.log" 2>/dev/null >>"$summary" || true
done

# 4. GPU tests (the CUDA kernels against the float64 reference, float64 gradcheck, opcheck, torch.compile, CUDA
# graphs of the samplers). Cold Triton and Inductor compiles dominate: at least 180 s.
step "tests -m cuda" 200 "$OUT_DIR/tests_cuda.log" "$PY" -m pytest tests -m cuda -q -p no:cacheprovider

# 5. Benchmarks (ratio tables and the ceilings of this GPU are in the logs' tails).
step "op benchmark" 90 "$OUT_DIR/bench_op.log" "$PY" -m pytest benchmarks/bench_instance_norm_pp_elu.py -q \
  -p no:cacheprovider -k "not (compiled and forward_backward)" --benchmark-json="$OUT_DIR/bench_op.json"
step "sde/langevin benchmark" 45 "$OUT_DIR/bench_update.log" "$PY" -m pytest benchmarks/bench_sde_step.py \
  benchmarks/bench_langevin_step.py -q -p no:cacheprovider --benchmark-json="$OUT_DIR/bench_update.json"
step "model benchmark (fp32 + bf16)" 120 "$OUT_DIR/bench_model.log" "$PY" -m pytest benchmarks/bench_model.py -q \
  -p no:cacheprovider -k "not compiled and not frozen" --benchmark-json="$OUT_DIR/bench_model.json"
# The inference network (issue 23): eager, Inductor-compiled and an AOT package, fp32 and bf16, each also replayed
# from a CUDA graph; first-call (compile) and cache-load costs beside the steady state, errors against eager.
step "inference eager/jit/aot (fp32 + bf16 + CUDA graphs)" 150 "$OUT_DIR/bench_inference.log" "$PY" \
  scripts/bench_inference.py --device cuda --precision fp32,bf16 --modes eager,jit,aot --cuda-graphs --repeats 30
step "sampling benchmark (fp32 + bf16)" 60 "$OUT_DIR/bench_sampling.log" "$PY" -m pytest \
  benchmarks/bench_sampling.py -q -p no:cacheprovider -k "not aot" --benchmark-json="$OUT_DIR/bench_sampling.json"
for precision in bf16 fp32; do
  step "table6 $precision" 45 "$OUT_DIR/table6_$precision.log" "$PY" -m ncsn_fast.cli bench table6 --device cuda \
    --datasets cifar10,celeba --precision "$precision" --k 3 --out "$OUT_DIR/table6_$precision"
done

# 6. Compact summary, last: the step lines, then the ratio tables with each provider's fraction of the ceilings,
# then the steps that did not run.
{
  echo "== ratios (time per call or per sample; x over the baseline; GFLOP/s as % of this GPU's peak, same run)"
  grep -h -A12 -E "^(machine ceilings|instance_norm_pp_elu|ncsnv2-forward|langevin-step|sde-step|sampling-digits)" \
    "$OUT_DIR"/bench_op.log "$OUT_DIR"/bench_update.log "$OUT_DIR"/bench_model.log "$OUT_DIR"/bench_sampling.log \
    2>/dev/null | grep -E "^(machine|instance|ncsnv2|langevin|sde|sampling|  )" || true
  grep -h -E "^(digits|fp32|bf16) " "$OUT_DIR"/bench_inference.log 2>/dev/null | cut -c1-160 || true
  cat "$OUT_DIR"/table6_*/table6.md 2>/dev/null || true
  if ((${#not_run[@]})); then
    printf '== did not run (%d): ' "${#not_run[@]}"
    (IFS=,; echo "${not_run[*]}" | sed 's/,/, /g')
  else
    echo "== every step ran"
  fi
} >>"$summary"
cat "$summary"
