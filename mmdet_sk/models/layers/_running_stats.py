# Copyright (c) mmdet-sk contributors. All rights reserved.
"""Conv-norm-act branches on maps with one value per channel, where BatchNorm has no batch."""
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm


def normalises_with_batch_stats(norm: nn.Module) -> bool:
    """Whether ``norm`` is a plain BatchNorm in training mode that has running statistics.

    ``SyncBatchNorm`` is left out: it gathers its statistics across ranks, so one value per
    channel on one rank is no error there, and its collectives must run on every rank. A
    BatchNorm without running statistics (``track_running_stats=False``) has nothing else to
    normalise with.

    Args:
        norm (nn.Module): A layer of a branch.

    Returns:
        bool: True for a training-mode ``_BatchNorm`` (not SyncBatchNorm) with running stats.
    """
    return (isinstance(norm, _BatchNorm) and not isinstance(norm, nn.SyncBatchNorm)
            and norm.training and norm.running_mean is not None)


def branch_with_running_stats(branch: nn.Sequential, x: Tensor) -> Tensor:
    """Run ``branch`` with its training-mode BatchNorms normalising by the running statistics.

    For a map with one value per channel (``B * H * W == 1``), on which a training-mode
    BatchNorm raises: each such norm (see :func:`normalises_with_batch_stats`) normalises as in
    eval mode, with its running mean and variance, and does not update them (nor
    ``num_batches_tracked``); its affine parameters still get gradients. Every other layer runs
    as usual. The norm's own forward (and so its hooks) is not called.

    Args:
        branch (nn.Sequential): The layers of the branch, e.g. conv, norm, activation.
        x (Tensor): The branch input.

    Returns:
        Tensor: The branch output.
    """
    for layer in branch:
        if normalises_with_batch_stats(layer):
            x = F.batch_norm(x, layer.running_mean, layer.running_var, layer.weight, layer.bias,
                             training=False, momentum=0., eps=layer.eps)
        else:
            x = layer(x)
    return x
