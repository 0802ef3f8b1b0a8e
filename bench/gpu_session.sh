#!/usr/bin/env bash
# The GPU session's measurements (docs/gpu.md): run on the device machine from the repository
# root, with the wheels and data that docs/gpu.md prepares under .gpu/ (carried, git-ignored).
#
#   bash bench/gpu_session.sh throughput   # issue 13 item 5: CUDA mapping throughput (~3 min)
#   bash bench/gpu_session.sh detection    # issue 16 item 8: the detection benchmark (~8 min)
#
# Every figure lands in $OUT (JSON, PNG and the log), so a part cut short still returns what it
# measured. Nothing here runs in CI.
set -u -o pipefail
part=${1:?usage: bench/gpu_session.sh throughput|detection}
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT" /tmp/pkg /tmp/site
# The device's python3 has torch, torchvision, timm, scipy, scikit-image; the rest travels as wheels.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .gpu/whl/*.whl || exit 1
ln -sfn "$PWD" /tmp/pkg/slidewise  # `import slidewise` whatever the checkout's folder is called
export PYTHONPATH=/tmp/pkg:/tmp/site PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" \
    | tee -a "$OUT/gpu.txt"

case "$part" in
throughput)
    # The seed's loop (224/112, batch 1, float32) against the engine on the same GPU, with AMP and
    # channels-last, then without (what AMP and the memory format are worth), tiles x batches swept.
    common=(--device cuda --size 4096 --seam-size 1024 --repeats 3)
    timeout 240 python3 -m slidewise.bench.mapping_throughput "${common[@]}" \
        --amp on --channels-last on --sweep-tiles 512,1024,2048 --sweep-batches 1,4,16 \
        --json "$OUT/throughput_cuda_amp.json" 2>&1 | tee "$OUT/throughput.log"
    timeout 120 python3 -m slidewise.bench.mapping_throughput "${common[@]}" \
        --amp off --channels-last off --json "$OUT/throughput_cuda_fp32.json" \
        2>&1 | tee -a "$OUT/throughput.log"
    ;;
detection)
    # The CPU curve's split (docs/benchmarks.md, "Detection on CPU: learning curve"): train on the
    # l4s_rgb training images whose id does not end in 0, test on those that do, at 224 px.
    args=(--train .gpu/l4s/train --val .gpu/l4s/valid --test .gpu/l4s/test --image-size 224
        --batch-size 8 --seed 0 --device cuda)
    timeout 330 python3 -m slidewise.bench.detection "${args[@]}" --epochs 12 \
        --models frcnn_resnet18_fpn_scratch --eval-every 164 \
        --json "$OUT/detection_scratch.json" --curve-png "$OUT/detection_curve.png" \
        2>&1 | tee "$OUT/detection.log"
    timeout 210 python3 -m slidewise.bench.detection "${args[@]}" --epochs 6 \
        --pretrain-epochs 6 --models frcnn_resnet18_fpn_mae \
        --json "$OUT/detection_mae.json" 2>&1 | tee -a "$OUT/detection.log"
    ;;
*)
    echo "unknown part $part: throughput or detection" >&2
    exit 2
    ;;
esac
