# Copyright (c) mmdet-sk contributors. All rights reserved.
"""Deploying SK detectors through MMDeploy: the checks before an export, the export of a built
detector, its ONNX Runtime twin, and the detections of the two compared.

The checks and the comparison import nothing from ``mmdeploy``, so that a wrong config or
checkpoint is named in any environment, before minutes of tracing; the functions that export
or run a backend import it when called (``make deploy`` builds the environment that has it:
``requirements-deploy.txt``, docs/deploy.md).
"""
import copy
import importlib.util
import os
import os.path as osp
import sys
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from mmengine.config import Config
from mmengine.registry import Registry
from torch import nn

from .checkpoint import check_checkpoint_fits, new_weights_summary, read_checkpoint
from .preflight import find_config_nodes

# The Python package each MMDeploy backend needs (what MMDeploy's backend managers look for).
BACKEND_PACKAGES = {
    'onnxruntime': 'onnxruntime',
    'tensorrt': 'tensorrt',
    'openvino': 'openvino',
    'ncnn': 'ncnn',
    'pplnn': 'pyppl',
    'torchscript': 'torch',
    'coreml': 'coremltools',
    'rknn': 'rknn',
    'tvm': 'tvm',
    'ascend': 'acl',
    'snpe': 'grpc',
    'vacc': 'vacc',
}
DEPLOY_HINT = ('`make deploy` builds .venv-deploy/ with MMDeploy 1.3.1, ONNX Runtime 1.15.1 and '
               'the torch 2.1.2 stack (requirements-deploy.txt; docs/deploy.md).')


def registered_by_mmdet_sk() -> Dict[str, str]:
    """The types mmdet_sk registers, with the name of the registry of each.

    Returns:
        dict[str, str]: e.g. ``{'SKAttention': 'model', 'AtomicCheckpointHook': 'hook'}``.
    """
    import mmengine.registry as root
    from mmdet import registry as mmdet_registries
    import mmdet_sk  # noqa: F401  (its modules registered)
    found = {}
    for module in (root, mmdet_registries):
        for registry in vars(module).values():
            if not isinstance(registry, Registry):
                continue
            for name, obj in registry.module_dict.items():
                if getattr(obj, '__module__', '').split('.')[0] == 'mmdet_sk':
                    found[name] = registry.name
    return found


def sk_types_in(cfg: Config) -> List[str]:
    """The ``type`` values of ``cfg`` (the whole config, scopes stripped) that mmdet_sk
    registers, sorted."""
    ours = registered_by_mmdet_sk()
    names = set()
    for _, node in find_config_nodes(cfg.to_dict() if isinstance(cfg, Config) else cfg,
                                     'type'):
        name = node['type']
        if isinstance(name, str) and name.split('.')[-1] in ours:
            names.add(name.split('.')[-1])
    return sorted(names)


def check_custom_imports(cfg: Config, filename: str) -> None:
    """Raise if ``cfg`` uses types of mmdet_sk without importing it through
    ``custom_imports``.

    MMDeploy's tools (``tools/deploy.py``, ``tools/test.py``, the profiler) and anyone else
    who loads the model config build it from what the config imports: without ``mmdet_sk`` in
    ``custom_imports`` they fail with an unregistered type, after the deploy config, the
    backend and the data are set up.

    Args:
        cfg (Config): The model config.
        filename (str): Its path, for the message.

    Raises:
        ValueError: The message names the mmdet_sk types used and the line to add.
    """
    used = sk_types_in(cfg)
    imports = cfg.get('custom_imports', {}) or {}
    modules = imports.get('imports', [])
    modules = [modules] if isinstance(modules, str) else list(modules)
    if not used or any(m == 'mmdet_sk' or m.startswith('mmdet_sk.') for m in modules):
        return
    have = f'custom_imports imports {modules}' if modules else 'there is no custom_imports'
    raise ValueError(
        f'Model config {filename} uses types of mmdet_sk ({", ".join(used)}) but {have}: '
        f'MMDeploy and MMDetection build the model from what the config imports. Add '
        f"`custom_imports = dict(imports=['mmdet_sk'], allow_failed_imports=False)` to it.")


def check_deploy_config(deploy_cfg: Config, filename: str,
                        backends: Optional[Sequence[str]] = None) -> str:
    """Check a deploy config and that its backend's Python package is installed; return the
    backend. Needs no mmdeploy (see :func:`check_mmdeploy`).

    Args:
        deploy_cfg (Config): The deploy config.
        filename (str): Its path, for the messages.
        backends (Sequence[str], optional): The backends the caller can run; None: any.

    Returns:
        str: ``backend_config.type``, e.g. ``'onnxruntime'``.

    Raises:
        ValueError: Not a deploy config of MMDetection, or a backend the caller cannot run.
        ImportError: The backend's package is missing; the message says what to do.
    """
    backend = deploy_cfg.get('backend_config', {}).get('type')
    codebase = deploy_cfg.get('codebase_config', {}).get('type')
    if backend is None or 'onnx_config' not in deploy_cfg and backend != 'torchscript':
        raise ValueError(f'{filename} is not an MMDeploy deploy config (it has no '
                         f'backend_config.type or no onnx_config); e.g. '
                         f'configs/deploy/detection_onnxruntime_static.py')
    if codebase != 'mmdet':
        raise ValueError(f"{filename} deploys codebase {codebase!r}; detectors need "
                         f"codebase_config.type='mmdet'")
    if backend not in BACKEND_PACKAGES:
        raise ValueError(f'{filename}: backend_config.type={backend!r} is not an MMDeploy '
                         f'backend; known: {", ".join(sorted(BACKEND_PACKAGES))}')
    package = BACKEND_PACKAGES[backend]
    if importlib.util.find_spec(package) is None:
        raise ImportError(
            f"{filename} deploys to {backend} (backend_config.type='{backend}'), whose Python "
            f"package '{package}' is not installed in this environment ({sys.executable}). "
            f'Install {backend} (and build MMDeploy\'s custom ops for it), or deploy to ONNX '
            f'Runtime with configs/deploy/detection_onnxruntime_static.py.')
    if backends is not None and backend not in backends:
        raise ValueError(f"{filename} deploys to {backend}; this tool exports and runs "
                         f"{', '.join(backends)} only")
    return backend


def check_mmdeploy(backend: str) -> None:
    """Raise if mmdeploy is not installed or, for ONNX Runtime, lacks the custom-op library
    of its wheel (mmcv's ops that the exported graphs call).

    Raises:
        ImportError: The message says how to get the deploy stack.
    """
    if importlib.util.find_spec('mmdeploy') is None:
        raise ImportError(f'mmdeploy is not installed in this environment ({sys.executable}). '
                          f'{DEPLOY_HINT}')
    if backend == 'onnxruntime':
        from mmdeploy.backend.onnxruntime.init_plugins import get_ops_path
        if not osp.exists(get_ops_path() or ''):
            raise ImportError(
                'MMDeploy\'s ONNX Runtime custom-op library (lib/libmmdeploy_onnxruntime_ops.so,'
                ' in the PyPI wheel of mmdeploy 1.3.1) is missing. '
                f'{DEPLOY_HINT}')


def check_checkpoint_for_config(cfg: Config, filename: str) -> Optional[str]:
    """Raise if the checkpoint ``filename`` cannot be read or lacks weights of ``cfg``'s model.

    The model is built on the meta device (shapes only). Gated SK blocks none of whose weights
    the checkpoint has (a checkpoint of the detector without SK) load as MMEngine loads them,
    at their initialisation, the identity: they are not refused, but returned as a summary.

    Returns:
        str | None: :func:`~mmdet_sk.utils.checkpoint.new_weights_summary`'s line where SK
        blocks keep their initialisation, else None.

    Raises:
        FileNotFoundError | RuntimeError: As :func:`read_checkpoint`.
        ValueError: As :func:`check_checkpoint_fits`.
    """
    from mmdet.registry import MODELS
    checkpoint = read_checkpoint(filename)
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.get('backbone', {}).pop('init_cfg', None)  # nothing to download for shapes
    with torch.device('meta'):
        model = MODELS.build(model_cfg)
    summary = new_weights_summary(model, checkpoint)
    check_checkpoint_fits(model, checkpoint, filename)
    return summary


def match_detections(reference, candidate, top_k: int = 10,
                     iou_thr: float = 0.5) -> List[dict]:
    """Match the ``top_k`` highest-scoring detections of ``reference`` with ``candidate``'s.

    Greedily, from the highest reference score down: each reference detection takes the
    not yet taken candidate detection of the same label with the largest box IoU, if that IoU
    is at least ``iou_thr``.

    Args:
        reference, candidate: ``InstanceData`` (or objects with ``bboxes`` (N, 4) in x1y1x2y2,
            ``scores`` (N, ) and ``labels`` (N, ) tensors; ``masks`` (N, H, W) optional).
        top_k (int): How many reference detections to match. Default: 10.
        iou_thr (float): Smallest IoU of a match. Default: 0.5.

    Returns:
        list[dict]: One per reference detection, by rank: ``rank``, ``label``, ``score``,
        ``index`` (the candidate's, or None), ``iou``, ``score_diff`` (candidate minus
        reference; None unmatched) and, where both have masks, ``mask_iou``.
    """
    from mmdet.structures.bbox import bbox_overlaps
    order = torch.argsort(reference.scores, descending=True)[:top_k]
    boxes = candidate.bboxes.float()
    ious = (bbox_overlaps(reference.bboxes[order].float(), boxes) if len(boxes) else
            torch.zeros(len(order), 0))
    masks = 'masks' in reference and 'masks' in candidate
    taken = torch.zeros(len(boxes), dtype=torch.bool)
    matches = []
    for rank, i in enumerate(order.tolist()):
        label = int(reference.labels[i])
        allowed = (candidate.labels.cpu() == label) & ~taken
        iou = torch.where(allowed, ious[rank].cpu(), torch.full_like(ious[rank].cpu(), -1.))
        j = int(iou.argmax()) if len(iou) else -1
        match = dict(rank=rank, label=label, score=float(reference.scores[i]), index=None,
                     iou=max(float(iou[j]), 0.) if j >= 0 else 0., score_diff=None)
        if j >= 0 and float(iou[j]) >= iou_thr:
            taken[j] = True
            match.update(index=j, score_diff=float(candidate.scores[j] - reference.scores[i]))
            if masks:
                a, b = reference.masks[i].bool(), candidate.masks[j].bool()
                union = int((a | b).sum())
                match['mask_iou'] = int((a & b).sum()) / union if union else 1.
        matches.append(match)
    return matches


def matches_summary(matches: List[dict]) -> dict:
    """``matched`` and ``total`` counts, the smallest IoU and mask IoU and the largest
    absolute score difference of the matched detections (None where nothing matched)."""
    hit = [m for m in matches if m['index'] is not None]
    masks = [m['mask_iou'] for m in hit if 'mask_iou' in m]
    return dict(matched=len(hit), total=len(matches),
                min_iou=min((m['iou'] for m in hit), default=None),
                max_score_diff=max((abs(m['score_diff']) for m in hit), default=None),
                min_mask_iou=min(masks, default=None))


# ------------------------------------------------------------------- what needs mmdeploy
def build_task_processor(model_cfg: Config, deploy_cfg: Config, device: str = 'cpu'):
    """MMDeploy's task processor of the model and deploy configs (imports mmdeploy)."""
    from mmdeploy.apis import build_task_processor as build
    return build(model_cfg, deploy_cfg, device)


def create_inputs(task_processor, model: nn.Module, imgs, deploy_cfg: Config) -> dict:
    """The images through the model config's test pipeline and the model's data
    preprocessor, as MMDeploy prepares the export and the backend's inputs.

    Args:
        task_processor: From :func:`build_task_processor`.
        model (nn.Module): The PyTorch detector (its ``data_preprocessor`` is used).
        imgs (str | np.ndarray | list): Image path(s) or array(s).
        deploy_cfg (Config): The deploy config (its ``onnx_config.input_shape``).

    Returns:
        dict: ``inputs`` (N, 3, H, W) and ``data_samples``.
    """
    from mmdeploy.utils import get_input_shape
    data, _ = task_processor.create_input(imgs, get_input_shape(deploy_cfg),
                                          data_preprocessor=model.data_preprocessor)
    return data


def export_end2end(model: nn.Module, data: dict, deploy_cfg: Config, work_dir: str) -> str:
    """Export ``model`` as MMDeploy's ``torch2onnx`` does, from a built (and possibly
    modified, e.g. BatchNorm-folded) detector rather than a checkpoint.

    Args:
        model (nn.Module): The detector in eval mode.
        data (dict): From :func:`create_inputs`: the traced example.
        deploy_cfg (Config): The deploy config.
        work_dir (str): Where ``onnx_config.save_file`` (``end2end.onnx``) is written.

    Returns:
        str: The path of the ONNX file.
    """
    from mmdeploy.apis.onnx import export
    from mmdeploy.utils import get_backend, get_dynamic_axes, get_onnx_config
    onnx_cfg = get_onnx_config(deploy_cfg)
    os.makedirs(work_dir, exist_ok=True)
    os_prefix = osp.join(work_dir, osp.splitext(onnx_cfg['save_file'])[0])
    names = onnx_cfg['input_names'] + onnx_cfg['output_names']
    # MMDeploy rewrites the forward of the model it exports for good: export a copy.
    export(copy.deepcopy(model), data['inputs'], input_metas=dict(data_samples=data['data_samples'],
                                                   mode='predict'),
           output_path_prefix=os_prefix, backend=get_backend(deploy_cfg).value,
           input_names=onnx_cfg['input_names'], output_names=onnx_cfg['output_names'],
           context_info=dict(deploy_cfg=deploy_cfg),
           opset_version=onnx_cfg.get('opset_version', 11),
           dynamic_axes=get_dynamic_axes(deploy_cfg, names),
           verbose=False,
           keep_initializers_as_inputs=onnx_cfg.get('keep_initializers_as_inputs', False),
           optimize=onnx_cfg.get('optimize', False))
    return os_prefix + '.onnx'


def build_backend_detector(task_processor, backend_file: str) -> nn.Module:
    """MMDeploy's backend detector (``End2EndModel``) of an exported file: ``model(inputs,
    data_samples, mode='predict')`` as the PyTorch detector's, ``model.wrapper`` the
    backend session."""
    return task_processor.build_backend_model(
        [backend_file], data_preprocessor_updater=task_processor.update_data_preprocessor)


def predict(model: nn.Module, data: dict) -> list:
    """``model(inputs, data_samples, mode='predict')`` on copies of the samples: each
    image's ``pred_instances`` (rescaled to the original image)."""
    with torch.no_grad():
        samples = model(data['inputs'], copy.deepcopy(data['data_samples']), mode='predict')
    return [s.pred_instances for s in samples]


def onnx_op_counts(path: str) -> Dict[str, int]:
    """How many nodes of each operator type the ONNX graph at ``path`` has (needs onnx)."""
    import onnx
    counts: Dict[str, int] = {}
    for node in onnx.load(path).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def input_shape_of(data: dict) -> Tuple[int, int]:
    """(H, W) of the batch ``data['inputs']`` the detector sees."""
    return tuple(data['inputs'].shape[-2:])
