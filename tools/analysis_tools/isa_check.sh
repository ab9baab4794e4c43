#!/usr/bin/env bash
# Does the CPU's instruction set change the demo's training numbers? Trains the plain demo config
# 10 iterations three times (twice as is, once with torch's kernels capped at AVX2) and
# compares the checkpoints tensor by tensor. About 3 x 1 minute on 2 idle cores.
set -e
cd "$(dirname "$0")/../.."
PY=.venv/bin/python
OPTS=$($PY -c "from mmdet_sk.datasets import data_root_options as d; print(' '.join(d('data/coco_shapes')))")
$PY -c "from mmdet_sk.datasets import ensure_demo_data; ensure_demo_data('data/coco_shapes')"
run() { # name, env...
  name=$1; shift
  env "$@" $PY tools/train.py configs/demo/faster-rcnn_r18_fpn_shapes.py --work-dir work_dirs/isa/$name \
    --cfg-options $OPTS train_cfg.max_iters=10 train_cfg.val_interval=1000 default_hooks.checkpoint.interval=10 > work_dirs/isa/$name.log 2>&1
}
mkdir -p work_dirs/isa
run default_a X=1
run default_b X=1
run avx2 ATEN_CPU_CAPABILITY=avx2 DNNL_MAX_CPU_ISA=AVX2
$PY - <<'PY'
import torch
def sd(n): return torch.load(f'work_dirs/isa/{n}/iter_10.pth', map_location='cpu', weights_only=False)['state_dict']
a, b, c = sd('default_a'), sd('default_b'), sd('avx2')
for name, other in (('default_b', b), ('avx2', c)):
    diff = max((a[k].float() - other[k].float()).abs().max().item() for k in a)
    same = sum(torch.equal(a[k], other[k]) for k in a)
    print(f'default_a vs {name}: {same}/{len(a)} tensors equal, max abs diff {diff:.3g}')
PY
grep -h "Iter(train) \[10/10\]" work_dirs/isa/*/*/*.log | sed 's/.*loss:/loss:/' | cut -c1-60
