"""tools/analysis_tools/get_flops.py: the command line over mmdet_sk.utils.complexity (tested in
tests/test_utils/test_complexity.py)."""
import re
import subprocess
import sys

from mmengine.config import Config

from mmdet_sk.utils.benchmark import fix_proposals
from mmdet_sk.utils.complexity import model_complexity

SK_CONFIG = 'configs/demo/faster-rcnn_r18_sk_fpn_shapes.py'
PLAIN_CONFIG = 'configs/demo/faster-rcnn_r18_fpn_shapes.py'  # SK_CONFIG's base: no SK
# NMS at IoU 1.0 (as fix_proposals does): both detectors' RoI heads get the config's
# test_cfg.rpn.max_per_img proposals, so that the RoI heads cost the same.
KEEP_PROPOSALS = 'model.test_cfg.rpn.nms.iou_threshold=1.0'


def sk_blocks(size):
    """``(channels, H, W)`` of each SK block of SK_CONFIG on a ``size`` x ``size`` input (a
    multiple of 64): after ``conv1`` of both BasicBlocks of c3-c5 (128, 256, 512 channels at
    strides 8, 16, 32) and on the FPN's P3-P6 (128 channels at strides 8 to 64)."""
    backbone = [(c, size // s, size // s) for s, c in ((8, 128), (16, 256), (32, 512))] * 2
    neck = [(128, size // s, size // s) for s in (8, 16, 32, 64)]
    return backbone + neck


def sk_counts(sk, channels, h, w):
    """Parameters and FLOPs of one SKAttention block, by its definition, and with MMEngine's
    counter's rules (one multiply-add is one FLOP; a conv's bias is not counted, an eval-mode
    BN counts 2 per element, the pooling, softmax, weighted sum and gate count 0).

    Args:
        sk (dict): The block's config (``kernels``, ``groups``, ``reduction``, ``L``, ``gate``).
        channels (int): Its channels C.
        h (int): Height of its map.
        w (int): Width of its map.

    Returns:
        tuple[int, int]: Its parameters and FLOPs.
    """
    c, d = channels, max(sk['L'], channels // sk['reduction'])
    branch_macs = [c * (c // sk['groups']) * k * k for k in sk['kernels']]  # per output pixel
    params = (sum(branch_macs) + c * len(sk['kernels'])  # branch convs, with biases
              + 2 * c * len(sk['kernels'])  # branch BNs' weight and bias
              + c * d + d  # fc: C -> d
              + len(sk['kernels']) * (d * c + c)  # fcs: d -> C, one per branch
              + (c if sk['gate'] else 0))
    flops = (h * w * (sum(branch_macs) + 2 * c * len(sk['kernels']))  # convs, BNs
             + c * d + len(sk['kernels']) * d * c)  # fc, fcs on the pooled (1, C)
    return params, flops


def test_cli_counts_the_plain_detector_and_the_sk_blocks(repo_root):
    """The SK detector's parameters and FLOPs are its base's plus those of its 10 SK blocks
    counted by their definition; the base's parameters are counted on the built model."""
    proc = subprocess.run(
        [sys.executable, 'tools/analysis_tools/get_flops.py', SK_CONFIG, '--shape', '64', '64',
         '--cfg-options', KEEP_PROPOSALS],
        cwd=repo_root, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'Input shape: (1, 3, 64, 64)' in proc.stdout
    flops = int(re.search(r'^FLOPs: \S+ \((\d+)\)$', proc.stdout, re.M)[1])
    params = int(re.search(r'^Params: \S+ \((\d+)\)$', proc.stdout, re.M)[1])

    from mmdet.registry import MODELS
    sk = Config.fromfile(f'{repo_root}/{SK_CONFIG}').sk
    blocks = [sk_counts(sk, *block) for block in sk_blocks(64)]
    assert len(blocks) == 10
    plain_cfg = fix_proposals(Config.fromfile(f'{repo_root}/{PLAIN_CONFIG}'))
    plain_params = sum(p.numel() for p in MODELS.build(plain_cfg.model).parameters())
    assert params == plain_params + sum(p for p, _ in blocks)
    assert flops == model_complexity(plain_cfg, (64, 64))['flops'] + sum(f for _, f in blocks)
