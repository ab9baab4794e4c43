"""mmdet_sk.utils.launch: the end of a distributed run."""
import torch.distributed as dist

from mmdet_sk.utils.launch import close_process_group


def test_close_process_group_destroys_it(tmp_path):
    dist.init_process_group('gloo', init_method=f'file://{tmp_path}/store', rank=0,
                            world_size=1)
    try:
        assert dist.is_initialized()
        close_process_group()
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    close_process_group()  # without a process group: nothing to do
