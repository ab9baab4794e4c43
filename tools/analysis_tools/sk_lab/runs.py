# Copyright (c) mmdet-sk contributors. All rights reserved.
"""Runs of the seeded experiments (the SK study, ablation and from-scratch runs): derive, train,
keep.

Every run is ``tools/train.py`` or ``tools/test.py`` of this repository on a config derived
from a demo config and written beside the run's results, so each number can be reproduced by
hand. A run is a dict: ``name`` (its folder under the experiment's work dir), ``config`` (the
base config, relative to the repository), ``seed`` and, as needed, ``iters``, ``finetune``
(the fine-tuning recipe below), ``gate`` (set on every SK module), ``load_from`` (relative to
the repository, :func:`repo_path`: results keep no machine's paths), ``edit`` (a function
that changes the config further) and any labels the experiment keeps (``arm``).

A finished run leaves ``result.json`` in its folder (and in a committed store, if the
experiment has one) and is not run again (:func:`kept`); a training cut off within a session
resumes from its last checkpoint. A run that starts from trained weights names their
:func:`weights_digest` in ``depends_on``: a kept result counts only for the same weights.
"""
import argparse
import json
import os
import os.path as osp
import shutil
import statistics
import subprocess
import sys
import time
from typing import Callable, List, Optional

#: The repository (its tools/ run the experiments): this file is
#: ``tools/analysis_tools/sk_lab/runs.py`` of a checkout.
ROOT = osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

#: The fine-tuning recipe shared by the study and the ablation: from the trained plain demo
#: detector, 200 iterations (two epochs of the 800 training images), AdamW lr 5e-4, 20
#: iterations of linear warm-up, cosine to lr / 10.
FT_ITERS = 200
FT_LR = 5e-4
FT_WARMUP = 20
#: What the SK configs share, as helper variables (``{{_base_.name}}``).
SK_RUNTIME = osp.join(ROOT, 'configs', '_base_', 'sk_runtime.py')

METRICS = ('bbox_mAP', 'bbox_mAP_50', 'bbox_mAP_75', 'bbox_mAP_s', 'bbox_mAP_m', 'bbox_mAP_l')
SK_TYPES = ('SKAttention', 'SKConv')


def repo_path(path: str) -> str:
    """``path`` (absolute, or relative to the working directory) relative to the repository,
    as runs and their results name files: the tools run from the repository's root."""
    return osp.relpath(osp.abspath(path), ROOT)


def experiment_parser(name: str, description: str, usage_images: int) -> argparse.ArgumentParser:
    """The command line every seeded experiment shares: its work dir, report dir and committed
    store named after it (``work_dirs/<name>``, ``docs/<name>.{md,json,png}``,
    ``docs/<name>_runs``), the data set, the SK use measurement and ``--report``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument('--work-dir', default=f'work_dirs/{name}', help='runs and results')
    parser.add_argument('--report-dir', default='docs', help=f'{name}.{{md,json,png}} go here')
    parser.add_argument('--store', default=f'docs/{name}_runs',
                        help='every finished run\'s result, kept across sessions (commit it)')
    parser.add_argument('--data-root', default='data/coco_shapes',
                        help='the demo set (generated with the demo defaults if missing)')
    parser.add_argument('--usage-images', type=int, default=usage_images,
                        help='val images for the SK use measurement per run (0: none)')
    parser.add_argument('--report', action='store_true', help='only rebuild the report')
    return parser


def finetune_overrides(iters: int, lr: float = FT_LR) -> dict:
    """The fine-tuning schedule (the same for every arm) as ``cfg.merge_from_dict`` options."""
    return {
        'optim_wrapper.optimizer.lr': lr,
        'param_scheduler': [
            dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=FT_WARMUP),
            dict(type='CosineAnnealingLR', by_epoch=False, begin=FT_WARMUP, end=iters,
                 eta_min=lr / 10)
        ],
    }


def set_sk_option(cfg, key: str, value) -> int:
    """Set ``key`` of every SK module config (SKAttention, SKConv) in ``cfg.model``.

    Returns:
        int: How many SK configs were changed (0 for a model without SK).
    """
    from mmdet_sk.utils.preflight import find_config_nodes
    count = 0
    for _, node in find_config_nodes(cfg.model, 'type'):
        if node['type'] in SK_TYPES:
            node[key] = value
            count += 1
    return count


def gate_keys(cfg) -> Optional[dict]:
    """The ``custom_keys`` entry of ``cfg``'s optimiser for the gate, or None."""
    keys = ((cfg.optim_wrapper.get('paramwise_cfg') or {}).get('custom_keys') or {})
    entry = keys.get('.gate')
    return None if entry is None else dict(entry)


def set_gate_keys(cfg, entry: Optional[dict]) -> None:
    """Replace the optimiser's ``custom_keys['.gate']`` entry (None: no entry)."""
    keys = dict((cfg.optim_wrapper.get('paramwise_cfg') or {}).get('custom_keys') or {})
    keys.pop('.gate', None)
    if entry is not None:
        keys['.gate'] = dict(entry)
    paramwise = dict(cfg.optim_wrapper.get('paramwise_cfg') or {})
    paramwise['custom_keys'] = keys
    cfg.optim_wrapper['paramwise_cfg'] = paramwise


def write_config(run: dict, work_dir: str) -> str:
    """Derive the run's config from its base and write it into ``work_dir``; its path."""
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(ROOT, run['config']))
    if run.get('gate') is not None:
        set_sk_option(cfg, 'gate', run['gate'])
    if run.get('edit') is not None:
        run['edit'](cfg)
    iters = run.get('iters')
    if iters:
        cfg.train_cfg.max_iters = iters
        cfg.train_cfg.val_interval = iters
    if run.get('finetune'):
        cfg.merge_from_dict(finetune_overrides(iters))
    cfg.randomness = dict(seed=run['seed'])
    # Losses logged as 10-iteration means; one checkpoint kept.
    cfg.default_hooks.logger.interval = 10
    cfg.default_hooks.checkpoint.max_keep_ckpts = 1
    if run.get('load_from'):
        cfg.load_from = run['load_from']
    # The shared fragment's values are in place by now; its helper names would still show
    # them as they were before the run's edits.
    for name in Config.fromfile(SK_RUNTIME).to_dict():
        cfg.pop(name, None)
    path = osp.join(work_dir, 'config.py')
    cfg.dump(path)
    return path


def sh(cmd: List[str], log: str) -> None:
    """Run ``cmd`` in the repository, its output appended to ``log``; raise if it fails."""
    with open(log, 'a') as f:
        f.write('+ ' + ' '.join(cmd) + '\n')
        f.flush()
        subprocess.run(cmd, check=True, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)


def json_lines(path: str) -> List[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def train_log(work_dir: str) -> List[dict]:
    """The scalars of every training under ``work_dir`` (MMEngine's vis_data), oldest first:
    a resumed run's records follow those of the part that was cut off."""
    runs = sorted(d for d in os.listdir(work_dir)
                  if osp.isfile(osp.join(work_dir, d, 'vis_data', 'scalars.json')))
    return [r for d in runs for r in json_lines(osp.join(work_dir, d, 'vis_data',
                                                         'scalars.json'))]


def metrics_of(record: dict) -> dict:
    """The COCO bbox metrics of a log record or a ``tools/test.py`` result."""
    return {m: record[f'coco/{m}'] for m in METRICS}


def sk_usage(config: str, checkpoint: str, data_root: str, num_images: int) -> Optional[dict]:
    """How far each SK site moves what it replaces, per site; None for a model without SK.

    See :func:`mmdet_sk.analysis.sk_output_change`. The model is built after seeding as
    ``tools/test.py`` does, so SK weights that the checkpoint does not have are the ones
    that were evaluated. ``config`` and ``checkpoint`` are absolute or relative to the
    repository.
    """
    from mmdet.apis import init_detector
    from mmdet.registry import DATASETS
    from mmengine.config import Config
    from mmengine.runner import set_random_seed

    from mmdet_sk.analysis import sk_groups, sk_output_change
    from mmdet_sk.datasets import data_root_options
    cfg = Config.fromfile(osp.join(ROOT, config))
    cfg.merge_from_dict(dict(opt.split('=', 1) for opt in data_root_options(data_root, cfg)))
    set_random_seed(cfg.randomness.seed)
    model = init_detector(cfg, osp.join(ROOT, checkpoint), device='cpu').eval()
    if not sk_groups(model):
        return None
    dataset = DATASETS.build(cfg.test_dataloader.dataset)
    return sk_output_change(model, dataset, range(min(num_images, len(dataset))))


def stored(run: dict) -> dict:
    """The JSON-able fields of a run (its ``edit`` function left out)."""
    return {k: v for k, v in run.items() if not callable(v)}


def weights_digest(checkpoint: str) -> str:
    """SHA-256 of a checkpoint's weights (its ``state_dict`` tensors in key order).

    Not of the file, whose meta data (time, paths) changes from run to run: two trainings that
    end in the same weights give the same digest.
    """
    import hashlib

    import torch
    import mmdet_sk  # noqa: F401  (allow-lists MMEngine's checkpoint contents)
    state = torch.load(checkpoint, map_location='cpu')
    state = state.get('state_dict', state)
    digest = hashlib.sha256()
    for key in sorted(state):
        digest.update(key.encode())
        digest.update(state[key].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def initial_weights(config: str, seed: int, path: str) -> str:
    """Save the initial weights of ``config``'s detector under ``seed`` to ``path`` (relative to
    the repository) unless it is there; their :func:`weights_digest`.

    The detector is built and initialised as MMEngine's Runner does for that seed (seeded, then
    ``init_weights``; the backbone's ``init_cfg`` as the config has it). Arms that load this
    file (``load_from``) start what they share with the config from the same weights; what only
    they have keeps its own initialisation under their seed.
    """
    import torch
    from mmdet.registry import MODELS
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmengine.runner import set_random_seed

    import mmdet_sk  # noqa: F401  (registers the SK modules)
    full = osp.join(ROOT, path)
    if not osp.isfile(full):
        cfg = Config.fromfile(osp.join(ROOT, config))
        init_default_scope(cfg.get('default_scope', 'mmdet'))
        set_random_seed(seed)
        model = MODELS.build(cfg.model)
        model.init_weights()
        os.makedirs(osp.dirname(full), exist_ok=True)
        tmp = full + '.tmp'
        torch.save(dict(state_dict=model.state_dict(),
                        meta=dict(config=config, seed=seed, initial_weights=True)), tmp)
        os.replace(tmp, full)
    return weights_digest(full)


def _usable(result: Optional[dict], run: dict) -> bool:
    """Whether a kept result stands for ``run``: it started from the same weights
    (``depends_on``, when the run names them) and, for a run whose checkpoint is needed
    later (``need_checkpoint``), that checkpoint is still on disk."""
    if result is None or result.get('depends_on') != run.get('depends_on'):
        return False
    return not run.get('need_checkpoint') or osp.isfile(osp.join(ROOT, result.get('checkpoint')
                                                                 or ''))


def _read(path: str) -> Optional[dict]:
    if not osp.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def _write(path: str, result: dict) -> None:
    os.makedirs(osp.dirname(path), exist_ok=True)
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        json.dump(result, f, indent=1)
    os.replace(tmp, path)  # a result is there whole or not at all


def _paths(name: str, args) -> List[str]:
    store = getattr(args, 'store', None)
    return [osp.join(ROOT, args.work_dir, name, 'result.json')] + (
        [osp.join(ROOT, store, name + '.json')] if store else [])


def kept_result(run: dict, args) -> Optional[dict]:
    """The kept result of ``run`` (work dir first, then the store) if usable, else None."""
    for path in _paths(run['name'], args):
        result = _read(path)
        if _usable(result, run):
            return result
    return None


def save_result(name: str, result: dict, args) -> None:
    """Write the result of run ``name`` to its work dir and to the store (if any)."""
    for path in _paths(name, args):
        _write(path, result)


def _claim(work_dir: str, run: dict) -> None:
    """Make ``work_dir`` the folder of ``run``, to resume in only if it is this run's.

    A folder left by a finished run whose result is no longer usable, or by a run started
    for other weights (``depends_on``) or another base config, is cleared first: resuming
    there would continue that run (``--resume`` takes the folder's last checkpoint and
    ignores ``load_from``). The folder's ``run.json`` says whose it is.
    """
    marker = osp.join(work_dir, 'run.json')
    mine = dict(depends_on=run.get('depends_on'), config=run['config'])
    if osp.isdir(work_dir) and (_read(marker) != mine
                                or osp.isfile(osp.join(work_dir, 'result.json'))):
        shutil.rmtree(work_dir)
    _write(marker, mine)


def kept(fn: Callable) -> Callable:
    """Run ``fn(run, args, work_dir, config)`` once per run.

    The wrapper takes ``(run, args)``; ``args.work_dir`` is the experiment's folder (relative
    to the repository). The result is written to ``<work_dir>/<run name>/result.json`` and,
    if ``args.store`` names a folder (one that is committed: work dirs do not outlive a
    session), to ``<store>/<run name>.json``; whenever the experiment starts again, a kept
    result is returned instead of running again, if it is usable (:func:`_usable`);
    otherwise the run's folder is claimed for it (:func:`_claim`) and ``fn`` runs.
    """

    def wrapper(run: dict, args) -> dict:
        result = kept_result(run, args)
        if result is not None:
            return result
        work_dir = osp.join(ROOT, args.work_dir, run['name'])
        _claim(work_dir, run)
        result = fn(run, args, work_dir, write_config(run, work_dir))
        save_result(run['name'], result, args)
        if 'metrics' in result:
            speed = f', {result["s_per_iter"]} s/iter' if result.get('s_per_iter') else ''
            print(f'    mAP {result["metrics"]["bbox_mAP"]:.3f}, {result["wall_s"]:.0f} s'
                  f'{speed}', flush=True)
        return result

    return wrapper


def _stamp() -> str:
    return time.strftime('%H:%M:%S')


@kept
def train_run(run: dict, args, work_dir: str, config: str) -> dict:
    """Train one run (with the final validation); its result.

    ``args`` needs ``work_dir``, ``data_root`` and ``usage_images`` (0: no SK use measured).
    """
    from mmdet_sk.datasets import data_root_options
    schedule = f'{run["iters"]} iterations' if run.get('iters') else 'its config\'s schedule'
    print(f'[{_stamp()}] {run["name"]}: training {schedule}', flush=True)
    # A run cut off by the end of a session resumes from its last checkpoint (exactly:
    # AtomicCheckpointHook keeps the RNG state); its wall time then counts the last part only,
    # its losses and s/iter every part (an iteration run twice: its last record).
    resumed = osp.isfile(osp.join(work_dir, 'last_checkpoint'))
    from mmengine.config import Config
    options = ['--cfg-options'] + data_root_options(args.data_root, Config.fromfile(config))
    start = time.time()
    sh([sys.executable, 'tools/train.py', config, '--work-dir', work_dir] +
       (['--resume'] if resumed else []) + options, osp.join(work_dir, 'run.log'))
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        checkpoint = f.read().strip()
    log = train_log(work_dir)
    train = list({r['iter']: r for r in log if 'loss' in r}.values())
    final = [r for r in log if 'coco/bbox_mAP' in r]
    if final:
        metrics = metrics_of(final[-1])
    else:  # cut off in the final validation, which follows the last checkpoint: test that
        sh([sys.executable, 'tools/test.py', config, checkpoint, '--work-dir', work_dir] +
           options, osp.join(work_dir, 'run.log'))
        metrics = last_test_metrics(work_dir)
    wall = time.time() - start
    result = dict(stored(run), config=osp.relpath(config, ROOT), wall_s=round(wall, 1),
                  s_per_iter=round(statistics.median(r['time'] for r in train), 3),
                  loss=[(r['iter'], r['loss']) for r in train], metrics=metrics,
                  # every validation's mAP, at its step (an iteration or an epoch, as the
                  # config's training loop counts)
                  val_curve=[(r['step'], r['coco/bbox_mAP']) for r in final],
                  checkpoint=osp.relpath(checkpoint, ROOT), resumed=resumed,
                  base_config=run['config'])
    if args.usage_images:
        result['usage'] = sk_usage(config, checkpoint, args.data_root, args.usage_images)
    return result


def last_test_metrics(work_dir: str) -> dict:
    """The metrics of the newest ``tools/test.py`` run under ``work_dir``."""
    stamp = sorted(d for d in os.listdir(work_dir)
                   if osp.isfile(osp.join(work_dir, d, f'{d}.json')))[-1]
    with open(osp.join(work_dir, stamp, f'{stamp}.json')) as f:
        return metrics_of(json.load(f))


@kept
def test_run(run: dict, args, work_dir: str, config: str) -> dict:
    """Evaluate the checkpoint ``run['load_from']`` in the run's config; its result."""
    from mmengine.config import Config
    from mmdet_sk.datasets import data_root_options
    print(f'[{_stamp()}] {run["name"]}: evaluating', flush=True)
    start = time.time()
    sh([sys.executable, 'tools/test.py', config, run['load_from'], '--work-dir', work_dir,
        '--cfg-options'] + data_root_options(args.data_root, Config.fromfile(config)),
       osp.join(work_dir, 'run.log'))
    result = dict(stored(run), iters=0, config=osp.relpath(config, ROOT),
                  wall_s=round(time.time() - start, 1), metrics=last_test_metrics(work_dir),
                  base_config=run['config'])
    if args.usage_images:
        result['usage'] = sk_usage(config, run['load_from'], args.data_root,
                                   args.usage_images)
    return result


def collect(folder: str) -> dict:
    """Every finished run's result under ``folder`` (relative to the repository): a work dir
    (``<run>/result.json``) or a store (``<run>.json``)."""
    results = {}
    root = osp.join(ROOT, folder)
    for name in sorted(os.listdir(root)) if osp.isdir(root) else []:
        path = osp.join(root, name, 'result.json')
        if name.endswith('.json') and osp.isfile(osp.join(root, name)):
            path, name = osp.join(root, name), name[:-len('.json')]
        if osp.isfile(path):
            with open(path) as f:
                results[name] = json.load(f)
    return results
