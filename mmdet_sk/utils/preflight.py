# Copyright (c) mmdet-sk contributors. All rights reserved.
"""Checks ``tools/train.py`` and ``tools/test.py`` run on the loaded config before the Runner.

Each catches a mistake that would otherwise stop the run late (after the model and the data
are built) or with a message that does not say what to fix:

* ``plugins`` of any backbone, including MMDetection's own ``ResNet``, whose blocks only
  ``assert`` the plugin position (a bare ``AssertionError``), and a ``LevelPlugins`` that
  does not fit the neck before it (number of maps, channels);
* missing annotation files and image folders of the data loaders the tool will use, with
  how to get the data;
* unreadable (truncated, corrupt) checkpoints given as ``load_from``, ``--resume [PATH]`` or
  ``tools/test.py CHECKPOINT``, and, for ``tools/test.py``, a checkpoint of another
  architecture (see :func:`~mmdet_sk.utils.checkpoint.check_checkpoint_fits`);
* ``AmpOptimWrapper`` on a machine without a GPU, and SyncBN in CPU distributed training.

Every error names the config field, the value and what is allowed or what to do.
"""
import logging
import os
import os.path as osp
from typing import Iterator, List, Optional, Tuple

import torch
from mmengine.config import Config
from mmengine.device import get_device
from mmengine.logging import print_log
from mmengine.registry import MODELS as ROOT_MODELS

from ..models.backbones import PluginResNet
from ..models.backbones.plugin_utils import (BOTTLENECK_POSITIONS, check_plugin_cfg,
                                             check_plugins)
from ..models.necks import plugin_neck_levels
from .checkpoint import check_checkpoint_fits, read_checkpoint

DEMO_DATA_HINT = ('Generate the demo data set with `python tools/misc/generate_demo_data.py '
                  '--out-dir {root}` (or `make demo`).')
COCO_HINT = ('Download COCO 2017 from https://cocodataset.org/#download (train2017.zip, '
             'val2017.zip and annotations_trainval2017.zip from http://images.cocodataset.org/'
             ') and unzip them into {root}, or run MMDetection\'s downloader: `python '
             '<site-packages>/mmdet/.mim/tools/misc/download_dataset.py --dataset-name '
             'coco2017 --save-dir {root} --unzip`.')
OTHER_DATA_HINT = ('Point the config at your data, e.g. `--cfg-options '
                   '{loader}.dataset.data_root=PATH`.')


def find_config_nodes(cfg, name: str) -> Iterator[Tuple[str, dict]]:
    """Yield ``(path, node)`` for every dict in ``cfg`` (a model config, lists and tuples
    included) that has a key ``name``; ``path`` starts at ``model``. A node may be changed
    while it is yielded: the walk goes on into its values as they are then."""
    stack = [('model', cfg)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, dict):
            if name in node:
                yield path, node
            stack.extend((f'{path}.{k}', v) for k, v in node.items())
        elif isinstance(node, (list, tuple)):
            stack.extend((f'{path}[{i}]', v) for i, v in enumerate(node))


def check_plugin_configs(model_cfg: dict) -> None:
    """Check the ``plugins`` of every module config in ``model_cfg`` with a ``type``.

    mmdet-sk's backbones check their plugins when built; this check covers MMDetection's
    own ResNet family too (``ResNet``, ``ResNetV1d``, ``ResNeXt``, ...). A ResNet with
    Bottleneck blocks offers ``after_conv1/2/3``; ResNet-18/34 (BasicBlock) take no plugins
    in MMDetection, and the message points to ``PluginResNet``. Plugins of other modules
    are checked for a registered ``type``.

    Args:
        model_cfg (dict): ``cfg.model``.

    Raises:
        TypeError | ValueError | KeyError: As :func:`check_plugins`, naming the field.
    """
    from mmdet.models.backbones.resnet import Bottleneck, ResNet
    from mmdet.registry import MODELS
    for path, node in find_config_nodes(model_cfg, 'plugins'):
        plugins, type_name = node['plugins'], node.get('type')
        if not plugins or not isinstance(type_name, str):
            continue
        cls = MODELS.get(type_name) or ROOT_MODELS.get(type_name)
        where = f'{path} (type={type_name!r})'
        if cls is None or not isinstance(cls, type):
            continue  # MMEngine reports the unknown type itself
        depth = node.get('depth')
        if hasattr(cls, 'positions'):  # PluginCSPDarknet and friends
            check_plugins(plugins, cls.positions, where)
        elif issubclass(cls, PluginResNet):
            continue  # checks its plugins itself when built, before any layer
        elif issubclass(cls, ResNet) and depth in getattr(cls, 'arch_settings', {}):
            block = cls.arch_settings[depth][0]
            if not issubclass(block, Bottleneck):
                raise ValueError(
                    f'{where}: depth={depth} builds {block.__name__}s, which take no '
                    f'`plugins` in MMDetection; use type=\'PluginResNet\' (positions '
                    f'after_conv1, after_conv2) or a depth of 50, 101 or 152')
            check_plugins(plugins, BOTTLENECK_POSITIONS, f'{where} depth={depth}',
                          num_stages=node.get('num_stages', 4))
        elif isinstance(plugins, (list, tuple)):
            for i, plugin in enumerate(plugins):
                check_plugin_cfg(plugin.get('cfg') if isinstance(plugin, dict) else plugin,
                                 f'{where} plugins[{i}]')


def check_neck_levels(model_cfg: dict) -> None:
    """Check that a ``PluginNeck``'s levels, or a ``LevelPlugins`` in a neck list, fit the neck.

    ``LevelPlugins`` learns the number of maps only when the neck first returns them (its
    ``forward`` raises on a mismatch) and a wrong ``in_channels`` surfaces as a convolution
    shape error. When the neck before it states ``num_outs`` / ``out_channels`` (FPN, PAFPN,
    ...), both are compared here, when the config is loaded.

    Args:
        model_cfg (dict): ``cfg.model``.

    Raises:
        ValueError: Naming both fields and the value to set.
    """
    for path, node in find_config_nodes(model_cfg, 'neck'):
        if node.get('type') == 'PluginNeck':
            try:
                plugin_neck_levels(node['neck'], node.get('in_channels'),
                                   node.get('num_levels'))
            except (TypeError, ValueError) as e:
                raise type(e)(f'{path}: {e}') from e
        necks = node['neck']
        if not isinstance(necks, (list, tuple)):
            continue
        for i, (prev, cur) in enumerate(zip(necks[:-1], necks[1:]), 1):
            if not (isinstance(prev, dict) and isinstance(cur, dict)
                    and cur.get('type') == 'LevelPlugins'):
                continue
            here, before = f'{path}.neck[{i}]', f'{path}.neck[{i - 1}] ({prev.get("type")})'
            num_outs, num_levels = prev.get('num_outs'), cur.get('num_levels')
            if num_outs is not None and num_levels != num_outs:
                raise ValueError(f'{here}.num_levels={num_levels!r}, but {before} returns '
                                 f'num_outs={num_outs} maps; set num_levels={num_outs}')
            out_channels, in_channels = prev.get('out_channels'), cur.get('in_channels')
            if isinstance(out_channels, int) and isinstance(in_channels, int) \
                    and in_channels != out_channels:
                raise ValueError(f'{here}.in_channels={in_channels}, but {before} has '
                                 f'out_channels={out_channels}; set in_channels={out_channels}')


def _dataset_paths(dataset: dict, where: str) -> Iterator[Tuple[str, str, dict]]:
    """Yield ``(field, local path, dataset cfg)`` for the files a dataset config reads."""
    if not isinstance(dataset, dict):
        return
    if isinstance(dataset.get('dataset'), dict):  # RepeatDataset, ClassBalancedDataset, ...
        yield from _dataset_paths(dataset['dataset'], f'{where}.dataset')
    for i, sub in enumerate(dataset.get('datasets') or []):  # ConcatDataset
        yield from _dataset_paths(sub, f'{where}.datasets[{i}]')
    backend = (dataset.get('backend_args') or {}).get('backend', 'local')
    if backend not in ('local', 'disk'):
        return
    root = dataset.get('data_root') or ''
    fields = [('ann_file', dataset.get('ann_file'))]
    fields += [(f'data_prefix.{k}', v) for k, v in (dataset.get('data_prefix') or {}).items()]
    for field, value in fields:
        if not isinstance(value, str) or not (value or root) or '://' in value + root:
            continue
        path = value if osp.isabs(value) else osp.join(root, value)
        yield f'{where}.{field}', path, dataset


def _data_hint(root: str, loader: str) -> str:
    name = osp.basename(osp.normpath(root)) if root else ''
    if 'shapes' in name:
        return DEMO_DATA_HINT.format(root=root.rstrip('/'))
    if 'coco' in name:
        return COCO_HINT.format(root=root.rstrip('/'))
    return OTHER_DATA_HINT.format(loader=loader)


def check_data_paths(cfg: Config, loaders: List[str]) -> None:
    """Check that the annotation files and image folders of ``loaders`` exist.

    Args:
        cfg (Config): The loaded config.
        loaders (list[str]): Data loader fields, e.g. ``['train_dataloader']``; the matching
            evaluators' ``ann_file`` (``val_evaluator`` for ``val_dataloader``) are checked
            too. Remote paths (``s3://...``, a non-local ``backend_args``) are skipped.

    Raises:
        FileNotFoundError: Naming the field, the path, the data root and how to get the data.
    """
    for loader in loaders:
        dataset = (cfg.get(loader) or {}).get('dataset')
        for field, path, ds in _dataset_paths(dataset, f'{loader}.dataset'):
            if not osp.exists(path):
                root = ds.get('data_root') or ''
                raise FileNotFoundError(
                    f'{field}: {path} does not exist (data_root={root!r}, working directory '
                    f'{osp.abspath(".")}). {_data_hint(root, loader)}')
        evaluator = cfg.get(loader.replace('dataloader', 'evaluator'))
        for i, metric in enumerate(evaluator if isinstance(evaluator, list) else [evaluator]):
            ann = metric.get('ann_file') if isinstance(metric, dict) else None
            if isinstance(ann, str) and '://' not in ann and not osp.exists(ann):
                name = loader.replace('dataloader', 'evaluator')
                name += f'[{i}]' if isinstance(evaluator, list) else ''
                raise FileNotFoundError(
                    f'{name}.ann_file: {ann} does not exist (working directory '
                    f'{osp.abspath(".")}). {_data_hint(osp.dirname(osp.dirname(ann)), loader)}')


def check_optim_wrapper(cfg: Config) -> None:
    """Refuse ``AmpOptimWrapper`` without a GPU, which MMEngine only ``assert``s."""
    wrapper = cfg.get('optim_wrapper') or {}
    if wrapper.get('type') == 'AmpOptimWrapper' and get_device() == 'cpu':
        raise ValueError(
            "optim_wrapper.type='AmpOptimWrapper' needs a GPU (MMEngine's loss scaler is "
            "CUDA's); on CPU use optim_wrapper.type='BF16OptimWrapper' (bf16 autocast, no "
            'loss scaling) or `tools/train.py --amp`, which picks it when there is no GPU')


def check_sync_bn(cfg: Config, launcher: str) -> None:
    """Refuse SyncBN in distributed training without a GPU, where torch cannot run it.

    ``torch.nn.SyncBatchNorm`` raises "SyncBatchNorm expected input tensor to be on GPU" in
    training once a process group exists, and gloo (CPU) groups are no exception. Converting
    a model (``mmengine.model.convert_sync_batchnorm``) works on CPU; running it does not.
    """
    if launcher == 'none' or get_device() != 'cpu':
        return
    if cfg.get('sync_bn'):
        raise ValueError(f'sync_bn={cfg.sync_bn!r} with --launcher {launcher} needs GPUs: '
                         f'torch.nn.SyncBatchNorm does not train on CPU tensors. Leave '
                         f'`sync_bn` unset on CPU (each process normalises its own batch)')
    for path, node in find_config_nodes(cfg.model, 'type'):
        if node['type'] in ('SyncBN', 'MMSyncBN'):
            raise ValueError(f'{path}.type={node["type"]!r} with --launcher {launcher} needs '
                             f'GPUs: SyncBN does not train on CPU tensors; use type=\'BN\'')


def _is_local(path: Optional[str]) -> bool:
    return isinstance(path, str) and '://' not in path


def latest_checkpoint(work_dir: str) -> Optional[str]:
    """The checkpoint ``--resume`` (without a path) resumes from, checked.

    Returns:
        str | None: The path in ``work_dir/last_checkpoint``; None if that file does not
        exist (MMEngine then trains from scratch).

    Raises:
        FileNotFoundError | RuntimeError: ``last_checkpoint`` is empty or names a checkpoint
        that is missing or unreadable; the message lists the other checkpoints.
    """
    record = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(record):
        return None
    with open(record) as f:
        path = f.read().strip()
    if not path:
        found = sorted(f for f in os.listdir(work_dir) if f.endswith('.pth'))
        raise RuntimeError(
            f'{record} is empty (a run killed while writing it); resume from a checkpoint '
            f'explicitly with `--resume PATH`. Checkpoints in {work_dir}: '
            f'{", ".join(found) or "none"}')
    if _is_local(path):
        try:
            read_checkpoint(path)
        except (FileNotFoundError, RuntimeError) as e:
            raise type(e)(f'--resume resumes from {path}, named by {record}: {e} Resume from '
                          f'a complete checkpoint explicitly with `--resume PATH`.') from e
    return path


def preflight(tool: str, args, cfg: Config) -> None:
    """Run the checks that apply to ``tool`` with its parsed ``args`` and loaded ``cfg``.

    Args:
        tool (str): ``'train.py'`` or ``'test.py'``.
        args (argparse.Namespace): The tool's parsed arguments.
        cfg (Config): The config with ``--cfg-options`` merged, as the tool loads it.
    """
    check_plugin_configs(cfg.model)
    check_neck_levels(cfg.model)
    if tool == 'train.py':
        loaders = ['train_dataloader'] + (['val_dataloader'] if cfg.get('val_cfg') else [])
        check_data_paths(cfg, loaders)
        check_sync_bn(cfg, args.launcher)
        if not args.amp:
            check_optim_wrapper(cfg)
        resume = args.resume is not None or bool(cfg.get('resume'))
        load_from = None if args.resume == 'auto' else (
            args.resume if args.resume is not None else cfg.get('load_from'))
        if resume and load_from is None:
            work_dir = args.work_dir or cfg.get('work_dir') or osp.join(
                './work_dirs', osp.splitext(osp.basename(args.config))[0])
            latest_checkpoint(work_dir)
        elif _is_local(load_from):
            read_checkpoint(load_from)
    elif tool == 'test.py':
        check_data_paths(cfg, ['test_dataloader'])
        if _is_local(args.checkpoint):
            checkpoint = read_checkpoint(args.checkpoint)
            from mmdet.registry import MODELS
            try:  # on the meta device: shapes without memory or initialisation
                with torch.device('meta'):
                    model = MODELS.build(cfg.model)
            except Exception as e:  # e.g. a model that downloads weights when built
                print_log(f'The checkpoint keys are not checked: the model does not build on '
                          f'the meta device ({type(e).__name__}: {e})', logger='current',
                          level=logging.WARNING)
                return
            check_checkpoint_fits(model, checkpoint, args.checkpoint)
