#!/usr/bin/env bash
# The GPU measurements this CPU-only project cannot make, prepared as one short script so that a session that is
# lent a GPU spends its minutes measuring (docs/fast.md, "On a GPU").
#
#   bash scripts/gpu_check.sh fetch   # on the CPU machine (package registry reachable): the wheels the GPU
#                                     # image lacks (diffusers, gymnasium, pymunk and their needs) -> .whl/
#   bash scripts/gpu_check.sh run     # on the GPU machine (device tool: carry [".whl"], timeout_s 420)
#
# `run` uses the machine's own python3 and torch, puts the wheels on PYTHONPATH, and then, each step under its own
# time limit so one failure or hang does not cost the others:
#   1. tests/test_cuda.py: every sampler and the fast path give the CPU's actions on the GPU;
#   2. eval.bench_chunk --device cuda: batch-1 latency per chunk, DDPM vs default ParaDDPM vs fewest_rounds,
#      eager and the fast path (CUDA graphs), same noise; speed-ups are wall-clock ratios;
#   3. eval.bench_rounds --device cuda: rounds, NFE and error per variant, with wall-clock time;
#   4. eval.bench_denoiser --device cuda: the batch curves of the shipped, full-size and LeRobot-size UNets.
# One log (log.txt) and four JSON files land in $OUT (the device tool's folder, which returns at most 8 files) or
# runs/gpu. Observation windows come from env resets there (../shared is not carried); the shipped policy is in
# the repository. GPU_CHECK_DEVICE=cpu dry-runs the plumbing on a CPU (slowly; the steps hit their limits).
set -u
cd "$(dirname "$0")/.."

case "${1:-}" in
fetch)
  grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
  mkdir -p .whl
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl \
    diffusers==0.42.1 importlib_metadata gymnasium==1.4.0 farama-notifications pymunk==7.3.1 cffi==2.1.1 \
    pycparser==3.12
  ls -la .whl
  ;;
run)
  out="${OUT:-runs/gpu}"
  dev="${GPU_CHECK_DEVICE:-cuda}"
  mkdir -p "$out"
  log="$out/log.txt"
  export PYTHONUNBUFFERED=1
  if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
      .whl/*.whl || exit 1
    export PYTHONPATH="/tmp/site:$PWD"
  else
    export PYTHONPATH="$PWD"
  fi
  { nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; date -u;
    python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"; } \
    2>&1 | tee "$log"
  fewest='paraddpm:w56/secant/zero/tol=0.03/atol=auto/first=24'
  step() {  # step SECONDS COMMAND...: run it under a time limit, append its output to the log, go on
    local secs=$1; shift
    echo "== $(date -u +%H:%M:%S) $*" | tee -a "$log"
    timeout "$secs" "$@" >> "$log" 2>&1
    local rc=$?
    echo "== rc $rc" | tee -a "$log"
    tail -n 16 "$log"
  }
  step 60 python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py
  step 75 python3 -m eval.bench_chunk --device "$dev" --paths eager \
    --samplers "ddpm,paraddpm,$fewest" --obs 8 --repeats 2 --json "$out/bench_chunk_eager.json"
  step 90 python3 -m eval.bench_chunk --device "$dev" --paths eager,fp32 \
    --samplers "ddpm,paraddpm,$fewest" --obs 8 --repeats 2 --json "$out/bench_chunk_fast.json"
  step 45 python3 -m eval.bench_rounds --device "$dev" --obs 8 --json "$out/bench_rounds.json" \
    --variants "w16,w32,w48/secant/zero/tol=0.03/atol=auto,w56/secant/zero/tol=0.03/atol=auto/first=24"
  step 100 python3 -m eval.bench_denoiser --device "$dev" --models shipped,full,lerobot \
    --batches 1,2,4,8,16,32,64 --variants eager,fast32 --json "$out/bench_denoiser.json"
  ;;
*)
  echo "usage: bash scripts/gpu_check.sh fetch|run" >&2
  exit 2
  ;;
esac
