# Copyright (c) mmdet-sk contributors. All rights reserved.
"""The Fuse and Select steps of Selective Kernel units, shared by SKAttention and SKConv.

The layers are set on the unit itself (``fc``, ``fuse_norm``, ``fcs``), not on a child module,
so that the ``state_dict`` keys stay those of the reference module (``fc.*``, ``fcs.{i}.*``).
"""
from typing import List, Optional

import torch
from mmcv.cnn import build_activation_layer, build_norm_layer
from torch import Tensor, nn

from ._running_stats import branch_with_running_stats, normalises_with_batch_stats
from ._select_function import (FuseSelectFunction, blend, eager_kernels_apply, pool,
                               weighted_sum)

#: The paper form of the Fuse, ``fuse_cfg=dict()``: ``z = ReLU(LN(fc(s)))``.
DEFAULT_FUSE_NORM = dict(type='LN')
DEFAULT_FUSE_ACT = dict(type='ReLU')
FUSE_CFG_KEYS = ('norm_cfg', 'act_cfg')


def check_fuse_cfg(owner: str, fuse_cfg: Optional[dict]) -> Optional[dict]:
    """Validate ``fuse_cfg`` and fill in its defaults.

    Args:
        owner (str): Class name for the error messages.
        fuse_cfg (dict, optional): None (the linear Fuse, ``z = fc(s)``) or a dict with the
            optional keys ``norm_cfg`` (default ``dict(type='LN')``) and ``act_cfg`` (default
            ``dict(type='ReLU')``); either may be None to leave that layer out.

    Returns:
        dict | None: ``fuse_cfg`` with both keys present, or None.
    """
    if fuse_cfg is None:
        return None
    if not isinstance(fuse_cfg, dict):
        raise TypeError(f'{owner}: `fuse_cfg` must be None or a dict with keys '
                        f'{FUSE_CFG_KEYS}, got {fuse_cfg!r}')
    unknown = sorted(set(fuse_cfg) - set(FUSE_CFG_KEYS))
    if unknown:
        raise ValueError(f'{owner}: `fuse_cfg` got unknown keys {unknown}; allowed keys are '
                         f'{FUSE_CFG_KEYS}')
    cfg = dict(norm_cfg=fuse_cfg.get('norm_cfg', DEFAULT_FUSE_NORM),
               act_cfg=fuse_cfg.get('act_cfg', DEFAULT_FUSE_ACT))
    for key, value in cfg.items():
        if value is not None and not (isinstance(value, dict) and 'type' in value):
            raise TypeError(f'{owner}: `fuse_cfg.{key}` must be None or a dict with a '
                            f'`type`, got {value!r}')
    return cfg


def check_int(owner: str, name: str, value, minimum: int) -> None:
    """Raise unless ``value`` is an int (not a bool) of at least ``minimum``.

    Args:
        owner (str): Class name for the message.
        name (str): The argument, for the message.
        value: The value given.
        minimum (int): The smallest allowed value.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f'{owner}: `{name}` must be an int, got {value!r}')
    if value < minimum:
        raise ValueError(f'{owner}: `{name}` must be >= {minimum}, got {value}')


def check_bool(owner: str, name: str, value) -> None:
    """Raise unless ``value`` is True or False."""
    if not isinstance(value, bool):
        raise TypeError(f'{owner}: `{name}` must be True or False, got {value!r}')


def keep_own_weights_absent_from_state_dict(module: nn.Module, state_dict: dict, prefix: str,
                                            *args) -> None:
    """Load-state-dict pre-hook of SK units: a state dict without any of the unit's own keys
    keeps the unit's weights.

    A checkpoint of the network without SK has none of the unit's own keys (all of
    SKAttention's; all of SKConv's but the replaced conv's ``weight``/``bias``, its
    ``inherited_keys``, which it loads): the unit's current tensors are put in for them (the
    children read the same dict), so nothing is reported missing and the unit keeps its
    initialisation. A partial match of its own keys is left alone, and reported as usual.
    """
    inherited = getattr(module, 'inherited_keys', ())
    own = {name: tensor for name, tensor in module.state_dict(keep_vars=True).items()
           if name not in inherited}
    if any(prefix + name in state_dict for name in own):
        return
    for name, tensor in own.items():
        state_dict[prefix + name] = tensor.detach()


class FuseSelectMixin:
    """Fuse (pool, squeeze) and Select (softmax attention over the branches) of an SK unit.

    The unit calls :meth:`_init_fuse_select` in its ``__init__`` (which also registers
    :func:`keep_own_weights_absent_from_state_dict`) and, in its forward, :meth:`_fuse_select`
    on its branch outputs (which records the selection for the analysis tools); the analysis
    tools call :meth:`_selection_weights` too.

    Recording: while ``record_selection`` is True (set by
    :class:`~mmdet_sk.engine.SKSelectionHook` and :mod:`mmdet_sk.analysis`), every forward
    keeps its selection weights, detached, in ``last_selection`` (K, B, C); no feature map is
    kept. Both attributes are plain attributes, not in the ``state_dict``.
    """

    def _init_fuse_select(self,
                          owner: str,
                          channels: int,
                          d: int,
                          num_branches: int,
                          fuse_cfg: Optional[dict],
                          fc_bias: bool = True) -> None:
        """Build ``fc`` (C -> d), the optional ``fuse_norm``/``fuse_act`` and ``fcs`` (d -> C).

        Args:
            owner (str): Class name for the error messages.
            channels (int): Channels of the branch outputs.
            d (int): Width of the squeezed descriptor.
            num_branches (int): Number of branches, one ``fcs`` layer each.
            fuse_cfg (dict, optional): See :func:`check_fuse_cfg`.
            fc_bias (bool): Whether ``fc`` and ``fcs`` have a bias (timm's SKNets have none:
                a norm follows ``fc``, and a bias shared by every branch's logit cancels in
                the softmax). Default: True.
        """
        check_bool(owner, 'fc_bias', fc_bias)
        fuse_cfg = check_fuse_cfg(owner, fuse_cfg)
        self.fuse_cfg = fuse_cfg
        self.fc = nn.Linear(channels, d, bias=fc_bias)
        self.fuse_norm = None
        self.fuse_act = None
        # LayerNorm(d) and BatchNorm1d take the (B, d) descriptor as it is; the 2-D norms
        # (BN, SyncBN, GN, IN) take it as a (B, d, 1, 1) map.
        self._fuse_norm_flat = True
        if fuse_cfg is not None:
            if fuse_cfg['norm_cfg'] is not None:
                _, self.fuse_norm = build_norm_layer(fuse_cfg['norm_cfg'], d)
                self._fuse_norm_flat = isinstance(self.fuse_norm,
                                                  (nn.LayerNorm, nn.BatchNorm1d))
            if fuse_cfg['act_cfg'] is not None:
                self.fuse_act = build_activation_layer(fuse_cfg['act_cfg'])
        self.fcs = nn.ModuleList(
            nn.Linear(d, channels, bias=fc_bias) for _ in range(num_branches))
        self.softmax = nn.Softmax(dim=0)
        self.record_selection = False
        self.last_selection: Optional[Tensor] = None
        self._register_load_state_dict_pre_hook(keep_own_weights_absent_from_state_dict,
                                                with_module=True)

    def _default_init(self) -> None:
        """PyTorch's default initialisation for every layer of the unit, the gate at 0.

        A parent's ``init_weights`` (ResNet applies Kaiming to every ``Conv2d`` it holds) runs
        before its children's, so the unit's ``init_weights`` calls this for the last word.
        """
        for m in self.modules():
            if m is not self and hasattr(m, 'reset_parameters'):
                m.reset_parameters()
        if getattr(self, 'gate', None) is not None:
            nn.init.zeros_(self.gate)
        self._is_init = True

    def _selection_weights(self, feats: List[Tensor]) -> Tensor:
        """Softmax selection weights of shape (K, B, C) for the ``K`` branch outputs.

        The global average of the branch sum equals the sum of the branch averages, which
        spares materialising ``U`` (:func:`pool`: sums accumulated in fp32, float64 for
        float64 maps, without an fp32 copy of the maps).
        """
        return self._weights_from_pooled(pool(feats))

    def _weights_from_pooled(self, pooled: Tensor) -> Tensor:
        """The attention network: ``fc``, the optional Fuse norm and activation, ``fcs`` and
        the softmax over the branches, from the pooled (B, C) descriptor to (K, B, C)."""
        z = self.fc(pooled.to(self.fc.weight.dtype))
        if self.fuse_norm is not None:
            z = self._fuse_normalise(z)
        if self.fuse_act is not None:
            z = self.fuse_act(z)
        logits = torch.stack([fc(z) for fc in self.fcs])
        return self.softmax(logits.to(pooled.dtype))

    def _fuse_normalise(self, z: Tensor) -> Tensor:
        """``fuse_norm`` on the (B, d) descriptor.

        A training BatchNorm has one value per channel at batch 1 (the descriptor is pooled):
        there it normalises with its running statistics for this forward, as the branches'
        norms do on a 1x1 map (:func:`branch_with_running_stats`).
        """
        x = z if self._fuse_norm_flat else z[:, :, None, None]
        if z.shape[0] == 1 and normalises_with_batch_stats(self.fuse_norm):
            x = branch_with_running_stats((self.fuse_norm, ), x)
        else:
            x = self.fuse_norm(x)
        return x if self._fuse_norm_flat else x.flatten(1)

    def _record(self, weights: Tensor) -> None:
        """Keep ``weights`` (K, B, C), detached, in ``last_selection`` if recording is on.

        Args:
            weights (Tensor): Selection weights from :meth:`_selection_weights`.
        """
        if self.record_selection:
            self.last_selection = weights.detach()

    @staticmethod
    def _select(feats: List[Tensor], weights: Tensor) -> Tensor:
        """The weighted sum of the branch outputs, accumulated in place in one output map.

        Args:
            feats (list[Tensor]): The ``K`` branch outputs, each (B, C, H, W).
            weights (Tensor): Selection weights (K, B, C).
        """
        weights = weights.to(feats[0].dtype)[..., None, None]
        out = feats[0] * weights[0]
        for i in range(1, len(feats)):
            out = out.addcmul_(feats[i], weights[i])
        return out

    def _fuse_select(self, feats: List[Tensor], base: Optional[Tensor] = None) -> Tensor:
        """Fuse and Select, and with a gate the blend ``base + gate * (out - base)``.

        Eagerly, with autograd recording, one :class:`FuseSelectFunction` (its backward
        writes each branch's gradient in one pass); eagerly without autograd, its forward's
        kernels, into the first branch's map (one pass for two branches, one for the blend,
        no new map); while torch.jit, ONNX export,
        ``torch.compile`` or ``torch.export`` trace, the plain operators. Every path computes
        the same within rounding and records the selection weights.

        Args:
            feats (list[Tensor]): The ``K`` branch outputs, each (B, C, H, W).
            base (Tensor, optional): What the gate blends from (the unit's input or its
                replaced conv's output); needed with a gate only.
        """
        if not eager_kernels_apply():
            return self._fuse_select_portable(feats, base)
        gate = getattr(self, 'gate', None)
        if torch.is_grad_enabled():
            # The attention network's parameters: the Function returns their gradients.
            params = [p for m in (self.fc, self.fuse_norm, self.fuse_act, *self.fcs)
                      if m is not None for p in m.parameters()]
            if any(t.requires_grad
                   for t in (*feats, *params, *((base, gate) if gate is not None else ()))):
                out, weights = FuseSelectFunction.apply(self._weights_from_pooled, len(feats),
                                                        base, gate, *feats, *params)
                self._record(weights)
                return out
        weights = self._selection_weights(feats)
        self._record(weights)
        # No autograd: the sum goes into the first branch's map, unless that map is base.
        inplace = base is None or feats[0].data_ptr() != base.data_ptr()
        out = weighted_sum(feats, weights.to(feats[0].dtype)[..., None, None], inplace)
        return out if gate is None else blend(base, out, gate, inplace=True)

    def _fuse_select_portable(self, feats: List[Tensor], base: Optional[Tensor] = None) -> Tensor:
        """:meth:`_fuse_select` in plain operators, as tracers and compilers see it."""
        weights = self._selection_weights(feats)
        self._record(weights)
        out = self._select(feats, weights)
        gate = getattr(self, 'gate', None)
        if gate is None:
            return out
        # base + s * (out - base): exactly base while s is 0, whatever the branches compute.
        return torch.addcmul(base, out - base, gate.to(out.dtype)[None, :, None, None])
