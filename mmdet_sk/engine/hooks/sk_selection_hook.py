# Copyright (c) mmdet-sk contributors. All rights reserved.
"""Log which kernel the SK modules select while a detector trains."""
from typing import Optional, Sequence, Union

from mmengine.dist import all_reduce
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.registry import HOOKS

from ...analysis.sk_selection import selection_scalars, set_recording, sk_groups

DATA_BATCH = Optional[Union[dict, tuple, list]]


@HOOKS.register_module()
class SKSelectionHook(Hook):
    """Log the mean softmax weight of each SK branch, per backbone stage and neck level.

    Every ``interval`` training iterations the hook switches ``record_selection`` on for all
    SK modules (:class:`SKAttention` blocks and :class:`SKConv` units) just before the
    iteration; after it, each module's selection weights (K, B, C) are averaged over the batch
    and the channels, then over the modules of the same stage or level, and the results are
    written with ``runner.visualizer.add_scalars`` to every configured vis backend
    (``vis_data/scalars.json`` of ``LocalVisBackend``; TensorBoard, WandB, ... when enabled),
    at step ``runner.iter + 1`` like the LoggerHook.
    Recording is then switched off and the stored weights are dropped. There is no extra
    forward and no feature map is kept: only the (K, B, C) weights of the one iteration.

    Scalars are named ``{prefix}/{group}/{branch}``, e.g. ``sk/backbone.layer2/k3d2`` or
    ``sk/neck.level1/k3d1`` (see :mod:`mmdet_sk.analysis.sk_selection` for the grouping); the
    branches of a group sum to 1. Under distributed training the values are averaged over the
    ranks. The hook is registered in MMEngine's root registry, so any OpenMMLab scope finds it:

    .. code-block:: python

        custom_hooks = [dict(type='SKSelectionHook', interval=50)]

    Args:
        interval (int): Record every ``interval`` training iterations (the iterations where
            ``(runner.iter + 1) % interval == 0``, as the LoggerHook counts). Default: 50.
        prefix (str): First component of the scalar names. Default: 'sk'.
    """

    priority = 'NORMAL'

    def __init__(self, interval: int = 50, prefix: str = 'sk') -> None:
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
            raise ValueError(f'SKSelectionHook: `interval` must be a positive int, '
                             f'got {interval!r}')
        self.interval = interval
        self.prefix = prefix
        self._groups = None
        self._active = False

    def before_train(self, runner) -> None:
        """Find the SK modules of the (unwrapped) model once."""
        self._groups = sk_groups(runner.model)
        if not self._groups:
            print_log('SKSelectionHook: the model has no SK module (SKAttention or SKConv); '
                      'nothing to log', logger='current', level=30)

    def before_train_iter(self, runner, batch_idx: int, data_batch: DATA_BATCH = None) -> None:
        """Switch recording on before an iteration that is due."""
        if self._groups is None:
            self._groups = sk_groups(runner.model)
        self._active = bool(self._groups) and self.every_n_train_iters(runner, self.interval)
        if self._active:
            set_recording(self._groups, True)

    def after_train_iter(self,
                         runner,
                         batch_idx: int,
                         data_batch: DATA_BATCH = None,
                         outputs: Optional[Union[dict, Sequence]] = None) -> None:
        """Log the weights recorded in this iteration, then switch recording off."""
        if not self._active:
            return
        self._active = False
        try:
            scalars = selection_scalars(self._groups, self.prefix, reduce_fn=_mean_over_ranks)
        finally:
            set_recording(self._groups, False)
        if scalars:
            runner.visualizer.add_scalars(scalars, step=runner.iter + 1)


def _mean_over_ranks(values):
    """Average a tensor over the distributed ranks (unchanged when not distributed)."""
    all_reduce(values, op='mean')
    return values
