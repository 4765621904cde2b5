#!/usr/bin/env bash
# The GPU run, ready: what a lent H100/H200 measures first, in two calls of the `device` tool.
#
# The device machine is offline and a call carries at most 64 MiB, so the inputs travel in two halves:
# the embedded SmolLM2 GGUF (98 MB) is split in two parts and the wheels the machine lacks (highspy, gguf)
# go with the first.  Steps:
#
#   here, once:  bash validation/gpu_suite.sh prepare
#                  -> .whl/ (highspy, gguf for Python 3.12) and .gpu/part1, .gpu/part2, .gpu/sha256
#                     (all ignored by git through .git/info/exclude)
#   call 1:      run(command="bash validation/gpu_suite.sh model-free", carry=[".whl", ".gpu/part1", ".gpu/sha256"],
#                    timeout_s=460)
#                  -> stores part 1 and the wheels in /root/optprune-gpu (kept while the machine stays warm,
#                     30 s), then: the GPU tests (35 s on an H200); the solver timings at LLaMA-7B shapes
#                     (12 s); the 8B rehearsal (K = 4, Llama-3.1-8B and Qwen3-8B shapes, menu step 0.1: about
#                     3 min a shape, estimated from the solver timings; over 200 s for the first, measured)
#   call 2, at once:  run(command="bash validation/gpu_suite.sh smollm2", carry=[".gpu/part2"], timeout_s=450)
#                  -> joins the GGUF (checksum verified), then SmolLM2 full protocol (128 x 2048 C4 windows,
#                     whole WikiText-2 test, bf16): Wanda, SparseGPT and the best recipe at 50% per-row
#                     (377 s on an H200, 2026-12-04: the best recipe's pricing pass alone 144 s)
#
# Budget: a machine's start (1-2 min) + call 1 (about 7 min) + call 2 (6.5 min) is about 15 minutes of
# device time, a whole session's: the issue's 8 minutes are missed by the pricing pass and the rehearsal.
#
# Each step has its own time limit and writes its tables as soon as it ends, named with the device
# (docs/results/*_<device>.md); everything new under docs/results and the logs come back as $OUT/results.tar.
# Unpack it here with: tar -xf <files_at>/results.tar -C . ; then commit the tables.
#   bash validation/gpu_suite.sh --dry-run   the same steps on the CPU with tiny models (CI runs it)
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
STORE=${OPTPRUNE_GPU_STORE:-/root/optprune-gpu}
OUT=${OUT:-/tmp/gpu_suite_out}
mkdir -p "$OUT"
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
stage=${1:-}

step() {   # step SECONDS NAME COMMAND...: run with a limit, log it, say how it ended
  local limit=$1 name=$2; shift 2
  local t0=$SECONDS
  echo "== $name (limit ${limit}s)"
  timeout "$limit" "$@" > >(tee -a "$OUT/$name.log") 2>&1
  local rc=$?
  echo "== $name: exit $rc after $((SECONDS - t0))s"
}

device_slug() {
  python3 -c "import torch; n = torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu'; \
print(''.join(c for c in n.lower().replace('nvidia', '') if c.isalnum()) or 'gpu')"
}

MARK=$(mktemp)   # files under docs/results newer than this came from this call
trap 'rm -f "$MARK"' EXIT
pack() {   # the tables this call wrote, and its logs, into $OUT/results.tar
  find docs/results -type f -newer "$MARK" | tar -cf "$OUT/results.tar" -T -
  (cd "$OUT" && tar -rf results.tar *.log && rm -f *.log)    # the files that come back: 8 at most
  echo "packed: $(tar -tf "$OUT/results.tar" | tr '\n' ' ')"
}

install_wheels() {
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    "$STORE"/whl/*.whl && export PYTHONPATH=$PYTHONPATH:/tmp/site
}

case "$stage" in
prepare)
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "highspy==$(python3 -c 'import highspy, importlib.metadata as m; print(m.version("highspy"))')" \
    "gguf==$(python3 -c 'import importlib.metadata as m; print(m.version("gguf"))')"
  gguf=$(python3 -c "from optprune.checkpoints.model_io import default_gguf_path; print(default_gguf_path())")
  mkdir -p .gpu && half=$(( ($(stat -c %s "$gguf") + 1) / 2 ))
  head -c "$half" "$gguf" > .gpu/part1 && tail -c +"$((half + 1))" "$gguf" > .gpu/part2
  sha256sum "$gguf" | cut -d' ' -f1 > .gpu/sha256
  grep -qx '/.whl/' .git/info/exclude || echo /.whl/ >> .git/info/exclude
  grep -qx '/.gpu/' .git/info/exclude || echo /.gpu/ >> .git/info/exclude
  du -sh .whl .gpu/part1 .gpu/part2
  ;;
model-free)
  mkdir -p "$STORE/whl" && cp .whl/*.whl "$STORE/whl/" && cp .gpu/part1 .gpu/sha256 "$STORE/"
  install_wheels
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/device.log"
  slug=$(device_slug)
  step 60 gpu_tests python3 -m pytest -q -p no:randomly -p no:cacheprovider tests/engine/test_placement.py \
    tests/solvers/test_solvers.py -k "cuda or gpu or device"
  step 40 solver_timings python3 validation/llama7b_shapes.py --methods wanda,sparsegpt,sparseswaps \
    --block-method '' --tag "$slug"
  step 330 scale_rehearsal python3 validation/scale_rehearsal.py --blocks 4 --device cuda --menu-step 0.1 \
    --work /root --logs "$OUT"
  pack
  ;;
smollm2)
  [ -f "$STORE/part1" ] || { echo "part 1 is not on this machine (it went back between the calls): rerun call 1"; exit 3; }
  install_wheels
  mkdir -p ~/.cache/optprune && cat "$STORE/part1" .gpu/part2 > ~/.cache/optprune/SmolLM2-135M-Instruct.Q4_1.gguf
  echo "$(cat "$STORE/sha256")  $HOME/.cache/optprune/SmolLM2-135M-Instruct.Q4_1.gguf" | sha256sum -c - || exit 4
  slug=$(device_slug)
  step 420 smollm2 python3 validation/pipeline_ppl.py --pattern per-row --sparsity 0.5 --nsamples 128 \
    --prefix "smollm2_$slug" --dtype bfloat16 --device cuda --allocation-step 0.05 --allocation-windows 32 \
    --methods wanda,sparsegpt,sparsegpt+recon+milpsens --work /root/pipeline_ppl
  pack
  ;;
--dry-run)
  work=$(mktemp -d)
  trap 'rm -rf "$work" "$MARK"' EXIT
  python3 validation/scale_rehearsal.py --write tiny 2 "$work/model" || exit 1
  python3 validation/scale_rehearsal.py --dry-run --work "$work" --out "$work/rehearsal.md" || exit 1
  python3 validation/llama7b_shapes.py --dry-run --methods wanda,sparsegpt --block-method sparsegpt \
    --results-dir "$work" > "$work/shapes.log" || { cat "$work/shapes.log"; exit 1; }
  python3 validation/pipeline_ppl.py --model "$work/model" --pattern per-row --sparsity 0.5 --nsamples 4 --seqlen 64 \
    --eval-windows 4 --allocation-windows 4 --allocation-step 0.05 --methods wanda,sparsegpt+recon+milpsens \
    --prefix dry --results-dir "$work" --work "$work/runs" > "$work/ppl.log" || { cat "$work/ppl.log"; exit 1; }
  cat "$work"/rehearsal.md "$work"/llama7b_shapes_cpu.md "$work"/dry_per-row-0.50.md || exit 1
  echo "dry run: every step ran"
  ;;
*)
  echo "usage: bash validation/gpu_suite.sh prepare | model-free | smollm2 | --dry-run (steps in this file's header)"
  exit 2
  ;;
esac
