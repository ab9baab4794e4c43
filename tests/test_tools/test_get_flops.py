"""tools/analysis_tools/get_flops.py: the command line over mmdet_sk.utils.complexity (tested in
tests/test_utils/test_complexity.py)."""
import subprocess
import sys

SK_CONFIG = 'configs/demo/faster-rcnn_r18_sk_fpn_shapes.py'


def test_cli(repo_root):
    proc = subprocess.run(
        [sys.executable, 'tools/analysis_tools/get_flops.py', SK_CONFIG, '--shape', '64', '64'],
        cwd=repo_root, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'Input shape: (1, 3, 64, 64)' in proc.stdout
    # 14,381,993 of the SK blocks' convs, fcs and norms, plus 2,304 gates (one per channel of
    # the 10 gated blocks: 2 x 128 + 2 x 256 + 2 x 512 in c3-c5, 4 x 128 on P3-P6).
    assert 'Params: 14.384M (14384297)' in proc.stdout
    assert 'FLOPs: ' in proc.stdout
