#!/usr/bin/env bash
# The one script to run on a GPU machine (no network; its own torch/triton/Python), within 10 minutes (each step
# has its own timeout; the summary is written as it goes, so a cut-short run still reports what finished):
# build ncsn_fast._C there, run the GPU tests, the op, Langevin and model benchmarks and Table 6 (CIFAR-10, CelebA;
# bf16 and fp32), and print a compact summary last.
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]        # OUT_DIR defaults to $OUT, else ./gpu_check_out
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${1:-${OUT:-gpu_check_out}}"
mkdir -p "$OUT_DIR"
export MAX_JOBS="${MAX_JOBS:-$(nproc)}"
export PYTHONUNBUFFERED=1
summary="$OUT_DIR/summary.txt"
: >"$summary"
note() { echo "$*" | tee -a "$summary"; }

note "== $(date -u +%FT%TZ) $(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | head -1)"
python -c "import torch, triton, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)" | tee -a "$summary"

# 1. Build against the machine's own torch (no build isolation: there is no network to fetch build deps).
start=$(date +%s)
if timeout 240 pip install --no-build-isolation --no-deps -e . >"$OUT_DIR/build.log" 2>&1; then
  note "build: ok in $(($(date +%s) - start)) s"
else
  note "build: FAILED (tail of $OUT_DIR/build.log below)"
  tail -30 "$OUT_DIR/build.log" | tee -a "$summary"
fi
python -c "from ncsn_fast.ops import available; print('backends on cuda:', available('instance_norm_pp_elu', 'cuda'))" 2>&1 | tail -1 | tee -a "$summary"

# 2. GPU tests.
timeout 90 python -m pytest tests/ops -m cuda -q -p no:cacheprovider >"$OUT_DIR/tests_cuda.log" 2>&1
note "tests -m cuda: $(tail -1 "$OUT_DIR/tests_cuda.log")"
timeout 45 python -m pytest tests/models/test_reference.py -q -p no:cacheprovider -k "forward" >"$OUT_DIR/tests_reference.log" 2>&1
note "reference-model tests (CPU ops, this machine's torch): $(tail -1 "$OUT_DIR/tests_reference.log")"

# 3. Benchmarks: the op at the issue's shapes, then the model forward. Ratio tables are in the logs' tails.
# (torch.compile of the reference is timed for the forward only: each compile costs tens of seconds)
timeout 150 python -m pytest benchmarks/bench_instance_norm_pp_elu.py -q -p no:cacheprovider \
  -k "not (compiled and forward_backward)" \
  --benchmark-json="$OUT_DIR/bench_op.json" >"$OUT_DIR/bench_op.log" 2>&1
note "op benchmark: $(tail -1 "$OUT_DIR/bench_op.log")"
timeout 45 python -m pytest benchmarks/bench_langevin.py -q -p no:cacheprovider -k langevin_step \
  --benchmark-json="$OUT_DIR/bench_langevin.json" >"$OUT_DIR/bench_langevin.log" 2>&1
note "langevin benchmark: $(tail -1 "$OUT_DIR/bench_langevin.log")"
timeout 120 python -m pytest benchmarks/bench_model.py -q -p no:cacheprovider -k "not fused-compiled" \
  --benchmark-json="$OUT_DIR/bench_model.json" >"$OUT_DIR/bench_model.log" 2>&1
note "model benchmark: $(tail -1 "$OUT_DIR/bench_model.log")"

# 4. Table 6 for CIFAR-10 and CelebA, fp32 and bf16, measured at the configs' batch sizes (no --quick).
for precision in bf16 fp32; do
  timeout 50 ncsn-fast bench table6 --device cuda --datasets cifar10,celeba --precision "$precision" --k 3 \
    --out "$OUT_DIR/table6_$precision" >"$OUT_DIR/table6_$precision.log" 2>&1
  note "table6 $precision: $(tail -1 "$OUT_DIR/table6_$precision.log" | cut -c1-120)"
done

# 5. Compact summary: ratio tables and the forward bandwidth of each provider.
{
  echo "== ratios (time per call or per sample; x over reference, x over compiled)"
  grep -h -A10 -E "^(instance_norm_pp_elu|ncsnv2-forward|langevin-step)" "$OUT_DIR"/bench_op.log \
    "$OUT_DIR"/bench_langevin.log "$OUT_DIR"/bench_model.log | grep -E "^(instance|ncsnv2|langevin|  )" || true
  python - "$OUT_DIR/bench_op.json" "$OUT_DIR/bench_langevin.json" <<'PY' || true
import json, sys
for path in sys.argv[1:]:
    for b in json.load(open(path))["benchmarks"]:
        gbs = b.get("extra_info", {}).get("effective_gb_per_s")
        if gbs:
            print(f"  {b['name']:55s} {gbs:8.1f} GB/s (compulsory bytes / min time)")
PY
  cat "$OUT_DIR"/table6_*/table6.md 2>/dev/null || true
} | tee -a "$summary"
