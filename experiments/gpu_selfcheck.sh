#!/usr/bin/env bash
# GPU self-check: the CUDA-only tests (pytest -m gpu), then the speed benchmarks of both paper networks
# (SDM ADE20K-256 and PIDM DeepFashion-256) on the GPU. About 8 minutes on one H100.
#
#   experiments/gpu_selfcheck.sh [OUT_DIR]     (default OUT_DIR: gpu_selfcheck/)
#
# Writes OUT_DIR/environment.txt, OUT_DIR/pytest.log, OUT_DIR/sdm_ade20k_256.md and OUT_DIR/pidm_deepfashion_256.md
# and ends with a summary naming every step that was skipped or failed, and why. Each step has a time limit, so a
# hang shows up as a failed step rather than a stuck script. Exit status: 0 when no step failed.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-gpu_selfcheck}
mkdir -p "$out"
summary=()
failed=0

step() {  # step NAME LIMIT_SECONDS COMMAND...: run one step under a time limit and record how it ended
  local name=$1 limit=$2
  shift 2
  echo "== $name"
  timeout --kill-after=10 "$limit" "$@"
  local status=$?
  case $status in
    0) summary+=("ok       $name") ;;
    124|137) summary+=("FAILED   $name: no result within $limit s"); failed=1 ;;
    *) summary+=("FAILED   $name: exit status $status"); failed=1 ;;
  esac
}

python - <<'EOF' | tee "$out/environment.txt"
import platform
import torch
print(f"python {platform.python_version()}, torch {torch.__version__}, CUDA {torch.version.cuda}")
for index in range(torch.cuda.device_count()):
    props = torch.cuda.get_device_properties(index)
    print(f"cuda:{index} {props.name}, {props.total_memory / 2**30:.0f} GiB, bf16 {torch.cuda.is_bf16_supported()}")
EOF
if ! python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "SKIPPED  everything: no CUDA device (torch.cuda.is_available() is False)"
  exit 0
fi

# One process (setup.cfg's addopts would start parallel workers, and need pytest-xdist, which a GPU image may lack).
step "CUDA tests (pytest -m gpu)" 200 bash -c "pytest -o addopts='' --strict-markers -m gpu -rs -p no:cacheprovider tests/test_gpu.py 2>&1 | tee '$out/pytest.log'"
# pytest -rs lists the skipped tests with their reasons (e.g. NCCL DDP without a second GPU).
while IFS= read -r line; do summary+=("SKIPPED  ${line#SKIPPED }"); done < <(grep '^SKIPPED' "$out/pytest.log")

# torch.compile of the paper networks alone takes minutes: the compiled rows are left to a separate
# `python -m experiments.benchmark ... --compile on` (tests/test_gpu.py compiles the tiny networks).
step "benchmark SDM ADE20K-256 (paper size)" 140 python -m experiments.benchmark --config configs/sdm/ade20k.yaml \
  --model_size config --device cuda --compile off --out "$out/sdm_ade20k_256.md"
step "benchmark PIDM DeepFashion-256 (paper size)" 140 python -m experiments.benchmark \
  --config configs/pidm/deepfashion_256.yaml --model_size config --device cuda --compile off \
  --out "$out/pidm_deepfashion_256.md"
summary+=("SKIPPED  benchmark torch.compile rows: --compile off keeps the check within 8 minutes")

echo
echo "== summary"
printf '%s\n' "${summary[@]}"
exit $failed
