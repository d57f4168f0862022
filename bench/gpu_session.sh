#!/usr/bin/env bash
# The GPU checks of one lent-machine session, prepared so that they fit its device time (15 minutes in all,
# a machine start included), in order of value:
#   1. the compiled Triton kernel against a float64 reference: the GPU tests of tests/kernels/test_flash.py (fp16/bf16/
#      fp32, causal, key padding, long and temporal shapes, padded head dims, determinism; skipped without CUDA),
#      with the first (heuristic) tile of each shape class: MINIVID_FLASH_AUTOTUNE=0 spares the compile time of
#      every candidate;
#   2. the expert transformer with the Triton kernel against SDPA, the gpu presets' attention_backend="auto"
#      running that kernel bit for bit on CUDA, and the attention module's triton tests, bf16 autocast included
#      (tests/transformers/test_cogvideox.py tests/nn/test_attention.py -k "triton or auto", first tiles), and the
#      system's training clips encoded on the GPU (tests/pipeline/test_system.py -k cuda) and the library calls
#      the notebooks make at their GPU scale (tests/pipeline/test_cuda_paths.py: the text-to-video, image-to-video
#      and Tora trainers on device="cuda" against their CPU runs; 6 s on 2 CPU cores with cuda read as cpu), and
#      I3D's logits on the GPU against the CPU's with IEEE float32 convolutions (tests/metrics/test_fvd.py -k cuda,
#      randomly initialised I3D: 4 clips, 4 s on one CPU core);
#   3. bench/attention.py --quick: TFLOP/s of the kernel against PyTorch SDPA's backends (issue 6, K4), autotuned,
#      each shape's chosen kernel also checked against SDPA's output and gradients;
#   4. bench/latte.py --quick: step time and peak memory of Latte's four variants (issue 5);
#   5. the demo (the full system's cpu preset, issues 14 and 18) on CUDA for 1500 steps: data, training and sampling
#      times, the sprite-check rate, caption colour and trajectory error of its samples (metrics.json), the first GPU
#      measurement of the system (the demo's CUDA default of 6000 steps is unmeasured);
#   6. bench/system.py --quick (issue 18): the full system's gpu preset, training throughput (clips/s, MFU) and the
#      latency of a 16-frame 64 x 64 video at 20 steps, with SDPA and with the Triton kernel.
# Each step has its own time limit; bench/attention.py saves after every row, so a step cut off by its limit
# keeps what it measured ("complete": false in its JSON). Everything lands in $OUT when it is set (the device
# tool brings that folder back), else in bench/results/. Uses the machine's python3 (PyTorch and Triton are
# preinstalled on the lent machines) with minivid from this checkout, no install:
#     bash bench/gpu_session.sh            # steps 1-5: limits 150 + 90 + 120 + 80 + 120 = 560 s, inside one 600 s call
#                                          # with the wheels' install and the preflight (about 20 s)
#     PART=2 bash bench/gpu_session.sh     # step 6 (limit 240 s), a second call: only with 5 minutes of device time
#                                          # left (a machine start costs 1-3), else a later session's first
#     PART=3 bash bench/gpu_session.sh     # 7. the gpu preset (issue 18) trained for at most 450 s (a checkpoint every
#                                          # 250 steps; the run is cut off there), then its latest checkpoint's samples
#                                          # for 64 held-out captions and paths scored by `minivid eval --checkpoint`
#                                          # (sprite check, caption accuracy, trajectory error; no FVD: no I3D weights
#                                          # there), limits 450 + 120 s: a later session's call, after steps 1-6 landed
# Afterwards copy the JSON files to bench/results/ under the names the scripts use (attention-<device>.json).
# The machines lack open_clip (the gpu preset's image tokens) and diffusers (step 2's parity tests skip without it):
# run `make gpu-wheels` here first and name .whl in every call's carry (PART 2 and 3 build the gpu preset, which
# imports open_clip); they are installed to /tmp/site. A preflight
# line in gpu_session.txt says which imports work. The demo runs with --no-video (no ffmpeg there).
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PY:-python3}
DEST=${OUT:-bench/results}
mkdir -p "$DEST"
step() {  # step SECONDS LOGNAME COMMAND...: run with a time limit, keep the log, say how it ended
    local limit=$1 log=$2; shift 2
    local t0=$SECONDS
    timeout "$limit" "$@" > "$DEST/$log" 2>&1
    local rc=$?
    echo "$log: exit $rc after $((SECONDS - t0)) s (limit $limit s)" | tee -a "$DEST/gpu_session.txt"
}
if [ -d .whl ]; then  # wheels carried from `make gpu-wheels`
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH="/tmp/site:$PYTHONPATH"
fi
{ date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1;
  $PY -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" 2>&1;
  for m in transformers open_clip diffusers minivid.pipeline.run; do  # preflight: what the steps import
      $PY -c "import $m" > /dev/null 2>&1 && echo "import $m: ok" || echo "import $m: FAILS (make gpu-wheels, carry .whl)"
  done; } > "$DEST/gpu_session.txt"
if [ "${PART:-1}" = 3 ]; then
    rm -rf /tmp/gpu-run
    step 450 gpu_preset_train.txt "$PY" -m minivid train gpu --device cuda --no-progress --out /tmp/gpu-run \
        --set checkpoint_every=250
    cp /tmp/gpu-run/log.csv "$DEST/gpu_preset_log.csv" 2>/dev/null
    step 120 gpu_preset_eval.txt "$PY" -m minivid eval --checkpoint /tmp/gpu-run --device cuda --clips 64 --no-fvd \
        --no-progress --out "$DEST/gpu_preset_eval.json"
    exit 0
fi
if [ "${PART:-1}" = 2 ]; then
    step 240 system.txt "$PY" bench/system.py --device cuda --quick --out "$DEST/system.json"
    exit 0
fi
step 150 gpu_tests.txt env MINIVID_FLASH_AUTOTUNE=0 "$PY" -m pytest -q -p no:cacheprovider tests/kernels/test_flash.py -k gpu -rs
step 90 expert_triton.txt env MINIVID_FLASH_AUTOTUNE=0 "$PY" -m pytest -q -p no:cacheprovider \
    tests/transformers/test_cogvideox.py tests/nn/test_attention.py tests/pipeline/test_system.py \
    tests/pipeline/test_cuda_paths.py tests/metrics/test_fvd.py -k "triton or auto or cuda" -rs
step 120 attention.txt "$PY" bench/attention.py --quick --out "$DEST/attention.json"
step 80 latte.txt "$PY" bench/latte.py --quick --out "$DEST/latte.json"
step 120 demo.txt "$PY" -m minivid demo --device cuda --steps 1500 --no-progress --no-video --out "$DEST/demo-gpu"
