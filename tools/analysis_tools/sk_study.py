#!/usr/bin/env python
# Copyright (c) mmdet-sk contributors. All rights reserved.
"""The seeded SK study on the demo data: does inserting SK help a trained detector, or from scratch?

    python tools/analysis_tools/sk_study.py            # or: make study
    python tools/analysis_tools/sk_study.py --report   # only rebuild the report from results

Every run is ``tools/train.py`` / ``tools/test.py`` on a config derived from the demo configs
(written beside its results), so each number can be reproduced by hand. Each finished run leaves
``result.json`` in its folder under ``--work-dir`` and is skipped when the tool starts again:
an interrupted study continues where it stopped. The protocol (fixed before any result):

1. ``P``: the plain demo detector, seed 0, 500 iterations from scratch (the demo as it is);
   it is also the seed-0 run of the from-scratch plain arm.
2. ``pilot``: how SK's gate is optimised, chosen once by a rule fixed here, on seed 0 only.
   From P, 80 fine-tuning iterations with the gated SK, three options: (a) the gate like
   every weight (AdamW weight decay 0.05), (b) no weight decay on the gate, (c) no weight
   decay and 10x the learning rate on the gate. Rule: the option whose SK blocks move their
   input most (mean over sites of ``||out - x|| / ||x||`` on the study's val images) among
   those whose training loss over iterations 61-80 is at most 5% above option (a)'s. The
   demo SK config must carry the chosen setting; the tool stops if it does not.
3. ``step 0``: P evaluated in three configs before any training: plain, SK as the seed's block
   (``gate=False``, seeds 0-2: the SK weights are random), SK with the gate (must equal P).
4. ``fine-tune``: from P, 200 iterations (two epochs of the 800 training images; AdamW lr
   5e-4, 20 iterations warm-up, cosine to 5e-5), arms plain / seed's block / gated SK, seeds
   0, 1, 2.
5. ``scratch``: the demo SK config (gated) and the plain one, 500 iterations, seeds 0, 1, 2.

Size: chosen for this 2-core machine at about 2.5 s/iteration (the demo, measured at the start
of the study): 500 + 3 x 80 + 9 x 200 + 5 x 500 = 5,040 training iterations, about 3.5 hours
with the evaluations. Validation: all 200 val images of the demo set, COCO bbox mAP (the
training's final validation; step 0: ``tools/test.py``). SK use: ``||out - x|| / ||x||`` per
SK site on the first ``--usage-images`` val images. Outputs: ``--report-dir``/sk_study.{md,
json,png} and the verdicts, printed and in the Markdown.
"""
import argparse
import json
import os
import os.path as osp
import statistics
import subprocess
import sys
import textwrap
import time

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)

PLAIN = 'configs/demo/faster-rcnn_r18_fpn_shapes.py'
SK = 'configs/demo/faster-rcnn_r18_sk_fpn_shapes.py'
SEEDS = (0, 1, 2)
SCRATCH_ITERS = 500
FT_ITERS = 200
PILOT_ITERS = 80
FT_LR = 5e-4
METRICS = ('bbox_mAP', 'bbox_mAP_50', 'bbox_mAP_75', 'bbox_mAP_s', 'bbox_mAP_m', 'bbox_mAP_l')
ARMS = {  # arm -> (label, config, gate)
    'plain': ('plain', PLAIN, None),
    'seedsk': ("SK, the seed's block", SK, False),
    'safesk': ('SK with zero-initialised gate', SK, True),
}
PILOT_OPTIONS = {  # option -> custom_keys entry for '.gate' (None: no entry)
    'a': None,
    'b': dict(decay_mult=0.0),
    'c': dict(decay_mult=0.0, lr_mult=10.0),
}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--work-dir', default='work_dirs/sk_study', help='runs and results')
    parser.add_argument('--report-dir', default='docs', help='sk_study.{md,json,png} go here')
    parser.add_argument('--data-root', default='data/coco_shapes',
                        help='the demo set (generated with the demo defaults if missing)')
    parser.add_argument('--usage-images', type=int, default=50,
                        help='val images for the SK use measurement')
    parser.add_argument('--report', action='store_true', help='only rebuild the report')
    parser.add_argument('--stop-after', choices=['P', 'pilot', 'step0', 'finetune', 'scratch'],
                        help='stop after this phase')
    return parser.parse_args()


# --------------------------------------------------------------------------- configs


def finetune_overrides(iters: int) -> dict:
    """The fine-tuning schedule, the same for every arm: AdamW 5e-4, warm-up, cosine."""
    return {
        'optim_wrapper.optimizer.lr': FT_LR,
        'param_scheduler': [
            dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=20),
            dict(type='CosineAnnealingLR', by_epoch=False, begin=20, end=iters,
                 eta_min=FT_LR / 10)
        ],
    }


def set_gate(cfg, gate: bool) -> None:
    """Set ``gate`` of every SKAttention config in ``cfg.model``."""
    stack = [cfg.model]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if node.get('type') == 'SKAttention':
                node['gate'] = gate
            stack.extend(node.values())
        elif isinstance(node, (list, tuple)):
            stack.extend(node)


def gate_keys(cfg) -> dict:
    """The ``custom_keys`` entry of ``cfg``'s optimiser for the gate, or None."""
    keys = ((cfg.optim_wrapper.get('paramwise_cfg') or {}).get('custom_keys') or {})
    entry = keys.get('.gate')
    return None if entry is None else dict(entry)


def write_config(run: dict, work_dir: str) -> str:
    """Derive the run's config from its base and write it into the run's folder."""
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(ROOT, run['config']))
    if run.get('gate') is not None:
        set_gate(cfg, run['gate'])
    if run.get('pilot') is not None:
        keys = dict((cfg.optim_wrapper.get('paramwise_cfg') or {}).get('custom_keys') or {})
        keys.pop('.gate', None)
        if PILOT_OPTIONS[run['pilot']] is not None:
            keys['.gate'] = PILOT_OPTIONS[run['pilot']]
        cfg.optim_wrapper['paramwise_cfg'] = dict(custom_keys=keys)
    iters = run.get('iters')
    if iters:
        cfg.train_cfg.max_iters = iters
        cfg.train_cfg.val_interval = iters
    if run.get('finetune'):
        cfg.merge_from_dict(finetune_overrides(iters))
    cfg.randomness = dict(seed=run['seed'])
    # Losses logged as 10-iteration means (the pilot's rule reads them); one checkpoint kept.
    cfg.default_hooks.logger.interval = 10
    cfg.default_hooks.checkpoint.max_keep_ckpts = 1
    if run.get('load_from'):
        cfg.load_from = run['load_from']
    path = osp.join(work_dir, 'config.py')
    cfg.dump(path)
    return path


# --------------------------------------------------------------------------- running


def sh(cmd, log):
    with open(log, 'a') as f:
        f.write('+ ' + ' '.join(cmd) + '\n')
        f.flush()
        subprocess.run(cmd, check=True, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)


def json_lines(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def train_log(work_dir):
    """The scalars of the newest training run under ``work_dir`` (MMEngine's vis_data)."""
    runs = sorted(d for d in os.listdir(work_dir)
                  if osp.isfile(osp.join(work_dir, d, 'vis_data', 'scalars.json')))
    return json_lines(osp.join(work_dir, runs[-1], 'vis_data', 'scalars.json'))


def metrics_of(record):
    return {m: record[f'coco/{m}'] for m in METRICS}


def sk_usage(config, checkpoint, data_root, num_images):
    """``||out - x|| / ||x||`` per SK site; None for a model without SK.

    The model is built after seeding as ``tools/test.py`` does, so SK weights that the
    checkpoint does not have (step 0) are the ones that were evaluated.
    """
    from mmdet.apis import init_detector
    from mmdet.registry import DATASETS
    from mmengine.config import Config
    from mmengine.runner import set_random_seed

    from mmdet_sk.analysis import sk_groups, sk_output_change
    from mmdet_sk.datasets import data_root_options
    cfg = Config.fromfile(config)
    cfg.merge_from_dict(dict(opt.split('=', 1) for opt in data_root_options(data_root)))
    set_random_seed(cfg.randomness.seed)
    model = init_detector(cfg, checkpoint, device='cpu').eval()
    if not sk_groups(model):
        return None
    dataset = DATASETS.build(cfg.test_dataloader.dataset)
    return sk_output_change(model, dataset, range(min(num_images, len(dataset))))


def kept(fn):
    """Run ``fn(run, args, work_dir, config)`` for a run once: its ``result.json`` is kept in
    the run's folder and returned, without running it again, whenever the study restarts."""

    def wrapper(run, args):
        work_dir = osp.join(ROOT, args.work_dir, run['name'])
        result_path = osp.join(work_dir, 'result.json')
        if osp.isfile(result_path):
            with open(result_path) as f:
                return json.load(f)
        os.makedirs(work_dir, exist_ok=True)
        result = fn(run, args, work_dir, write_config(run, work_dir))
        with open(result_path, 'w') as f:
            json.dump(result, f, indent=1)
        speed = f', {result["s_per_iter"]} s/iter' if result.get('s_per_iter') else ''
        print(f'    mAP {result["metrics"]["bbox_mAP"]:.3f}, {result["wall_s"]:.0f} s{speed}',
              flush=True)
        return result

    return wrapper


@kept
def train_run(run, args, work_dir, config):
    """Train (with the final validation) one run; its result."""
    from mmdet_sk.datasets import data_root_options
    print(f'[{time.strftime("%H:%M:%S")}] {run["name"]}: training {run["iters"]} iterations',
          flush=True)
    # A run cut off by the end of a session resumes from its last checkpoint (exactly:
    # AtomicCheckpointHook keeps the RNG state); its wall time then counts the last part only.
    resumed = osp.isfile(osp.join(work_dir, 'last_checkpoint'))
    start = time.time()
    sh([sys.executable, 'tools/train.py', config, '--work-dir', work_dir] +
       (['--resume'] if resumed else []) + ['--cfg-options'] +
       data_root_options(args.data_root), osp.join(work_dir, 'run.log'))
    wall = time.time() - start
    log = train_log(work_dir)
    train = [r for r in log if 'loss' in r]
    final = [r for r in log if 'coco/bbox_mAP' in r][-1]
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        checkpoint = f.read().strip()
    result = dict(
        name=run['name'], arm=run.get('arm'), seed=run['seed'], iters=run['iters'],
        config=osp.relpath(config, ROOT), wall_s=round(wall, 1),
        s_per_iter=round(statistics.median(r['time'] for r in train), 3),
        loss=[(r['iter'], r['loss']) for r in train],
        metrics=metrics_of(final), checkpoint=osp.relpath(checkpoint, ROOT), resumed=resumed)
    result['usage'] = sk_usage(config, checkpoint, args.data_root, args.usage_images)
    return result


@kept
def test_run(run, args, work_dir, config):
    """Evaluate a checkpoint in a config (no training); its result."""
    from mmdet_sk.datasets import data_root_options
    print(f'[{time.strftime("%H:%M:%S")}] {run["name"]}: evaluating', flush=True)
    start = time.time()
    sh([sys.executable, 'tools/test.py', config, run['load_from'], '--work-dir', work_dir,
        '--cfg-options'] + data_root_options(args.data_root), osp.join(work_dir, 'run.log'))
    stamp = sorted(d for d in os.listdir(work_dir)
                   if osp.isfile(osp.join(work_dir, d, f'{d}.json')))[-1]
    with open(osp.join(work_dir, stamp, f'{stamp}.json')) as f:
        metrics = metrics_of(json.load(f))
    result = dict(name=run['name'], arm=run.get('arm'), seed=run['seed'], iters=0,
                  config=osp.relpath(config, ROOT), wall_s=round(time.time() - start, 1),
                  metrics=metrics,
                  usage=sk_usage(config, run['load_from'], args.data_root,
                                 args.usage_images))
    return result


def mean_usage(result):
    return statistics.mean(v['rel_change'] for v in result['usage'].values())


def late_loss(result):
    """Mean training loss over the pilot's last 20 iterations (two 10-iteration means)."""
    return statistics.mean(loss for it, loss in result['loss'] if it > PILOT_ITERS - 20)


def choose_pilot(pilots):
    """The rule of the module docstring, applied to the pilot results."""
    limit = late_loss(pilots['a']) * 1.05
    fine = [k for k in PILOT_OPTIONS if late_loss(pilots[k]) <= limit]
    return max(fine, key=lambda k: mean_usage(pilots[k]))


# --------------------------------------------------------------------------- the study


def study(args):
    from mmengine.config import Config

    from mmdet_sk.datasets import ensure_demo_data
    ensure_demo_data(osp.join(ROOT, args.data_root))
    results = {}
    scratch = lambda arm, seed: dict(  # noqa: E731
        name=f'scratch_{arm}_s{seed}', arm=f'scratch_{arm}', seed=seed, iters=SCRATCH_ITERS,
        config=PLAIN if arm == 'plain' else SK)

    p = results['P'] = train_run(scratch('plain', 0), args)
    p_ckpt = osp.join(ROOT, p['checkpoint'])
    if args.stop_after == 'P':
        return results

    pilots = {}
    for option in PILOT_OPTIONS:
        pilots[option] = results[f'pilot_{option}'] = train_run(
            dict(name=f'pilot_{option}', arm='pilot', seed=0, iters=PILOT_ITERS, config=SK,
                 gate=True, pilot=option, finetune=True, load_from=p_ckpt), args)
    choice = choose_pilot(pilots)
    results['pilot_choice'] = dict(option=choice, custom_keys_gate=PILOT_OPTIONS[choice])
    shipped = gate_keys(Config.fromfile(osp.join(ROOT, SK)))
    if shipped != PILOT_OPTIONS[choice]:
        raise SystemExit(f'The pilot chose option {choice} (custom_keys[".gate"] = '
                         f'{PILOT_OPTIONS[choice]}), but {SK} has {shipped}: set it there '
                         f'(and in the shipped configs), then run the study again')
    if args.stop_after == 'pilot':
        return results

    for arm, (_, config, gate) in ARMS.items():
        for seed in (SEEDS if arm == 'seedsk' else (0, )):
            name = f'step0_{arm}_s{seed}'
            results[name] = test_run(
                dict(name=name, arm=f'step0_{arm}', seed=seed, config=config, gate=gate,
                     load_from=p_ckpt), args)
    if args.stop_after == 'step0':
        return results

    for seed in SEEDS:
        for arm, (_, config, gate) in ARMS.items():
            name = f'ft_{arm}_s{seed}'
            results[name] = train_run(
                dict(name=name, arm=f'ft_{arm}', seed=seed, iters=FT_ITERS, config=config,
                     gate=gate, finetune=True, load_from=p_ckpt), args)
    if args.stop_after == 'finetune':
        return results

    for seed in SEEDS:
        for arm in ('sk', 'plain'):
            results[f'scratch_{arm}_s{seed}'] = train_run(scratch(arm, seed), args)
    return results


def collect(args):
    """Every finished run's result under ``--work-dir``."""
    results = {}
    root = osp.join(ROOT, args.work_dir)
    for name in sorted(os.listdir(root)) if osp.isdir(root) else []:
        path = osp.join(root, name, 'result.json')
        if osp.isfile(path):
            with open(path) as f:
                results[name] = json.load(f)
    return results


# --------------------------------------------------------------------------- report


def summary(values):
    if not values:
        return None
    return dict(mean=statistics.mean(values),
                std=statistics.stdev(values) if len(values) > 1 else 0.0, n=len(values),
                values=values)


def fmt(stats, digits=3):
    if stats is None:
        return 'not run yet'
    seeds = ', '.join(f'{v:.{digits}f}' for v in stats['values'])
    return f'{stats["mean"]:.{digits}f} ± {stats["std"]:.{digits}f} ({seeds})'


def arm_runs(results, arm):
    return [r for r in results.values() if r.get('arm') == arm]


def verdicts(table):
    """Plain statements of what the numbers support, with the rule each one uses.

    A difference counts when the arms' means differ by more than the larger of their two
    seed standard deviations (and by more than 0.005 mAP); otherwise it is within the seed
    spread.
    """
    lines = []

    def compare(a, b, what):
        sa, sb = table.get(a), table.get(b)
        if not sa or not sb or sa['n'] < 3 or sb['n'] < 3:
            lines.append(f'{what}: not all seeds have run yet')
            return
        diff = sa['mean'] - sb['mean']
        spread = max(sa['std'], sb['std'], 0.005)
        if abs(diff) <= spread:
            verdict = 'no difference beyond the seed spread'
        else:
            verdict = 'higher' if diff > 0 else 'lower'
            verdict = f'{verdict} by more than the seed spread'
        lines.append(f'{what}: {sa["mean"]:.3f} vs {sb["mean"]:.3f} mAP (difference '
                     f'{diff:+.3f}, spread {spread:.3f}): {verdict}')

    compare('ft_safesk', 'ft_plain', 'Fine-tuned, gated SK vs plain')
    compare('ft_seedsk', 'ft_plain', "Fine-tuned, the seed's SK block vs plain")
    compare('ft_safesk', 'ft_seedsk', "Fine-tuned, gated SK vs the seed's block")
    compare('scratch_sk', 'scratch_plain', 'From scratch, gated SK vs plain')
    return lines


def report(results, args):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    table = {}
    for arm in ('step0_plain', 'step0_seedsk', 'step0_safesk', 'ft_plain', 'ft_seedsk',
                'ft_safesk', 'scratch_plain', 'scratch_sk'):
        runs = sorted(arm_runs(results, arm), key=lambda r: r['seed'])
        table[arm] = summary([r['metrics']['bbox_mAP'] for r in runs])
        if table[arm]:
            table[arm]['seeds'] = [r['seed'] for r in runs]
            walls = [r['wall_s'] for r in runs]
            table[arm]['wall_s'] = walls
            table[arm]['resumed'] = [bool(r.get('resumed')) for r in runs]
            table[arm]['s_per_iter'] = [r.get('s_per_iter') for r in runs]
            table[arm]['usage'] = [
                {site: round(v['rel_change'], 4) for site, v in r['usage'].items()}
                if r.get('usage') else None for r in runs]
            table[arm]['gates'] = [
                {site: round(v['gate_abs_mean'], 4) for site, v in r['usage'].items()
                 if 'gate_abs_mean' in v} if r.get('usage') else None for r in runs]
    lines = verdicts(table)
    step0 = [results.get(f'step0_{arm}_s0') for arm in ('plain', 'safesk')]
    if all(step0):
        same = 'the same' if step0[0]['metrics'] == step0[1]['metrics'] else 'NOT the same'
        maps = [r['metrics']['bbox_mAP'] for r in step0]
        lines.insert(0, f'Step 0: gated SK inserted into P gives {same} COCO metrics as P in '
                     f'the plain config (mAP {maps[1]:.3f} vs {maps[0]:.3f}; MMDetection rounds '
                     f'them to 3 decimals)')
    names = {
        'step0_plain': 'P, plain config (step 0)',
        'step0_seedsk': "P + SK as the seed's block (step 0, random SK)",
        'step0_safesk': 'P + gated SK (step 0)',
        'ft_plain': f'fine-tuned {FT_ITERS} it., plain',
        'ft_seedsk': f"fine-tuned {FT_ITERS} it., SK as the seed's block",
        'ft_safesk': f'fine-tuned {FT_ITERS} it., gated SK',
        'scratch_plain': f'from scratch {SCRATCH_ITERS} it., plain',
        'scratch_sk': f'from scratch {SCRATCH_ITERS} it., gated SK',
    }
    md = ['| arm | mAP mean ± std (per seed 0, 1, 2) | s/iter (median per seed) | '
          'wall s per run | SK use: mean ‖out − x‖ / ‖x‖ per seed |',
          '| --- | --- | --- | --- | --- |']
    for arm, label in names.items():
        stats = table.get(arm)
        if not stats:
            md.append(f'| {label} | not run yet | | | |')
            continue
        spi = ', '.join(f'{v:.2f}' for v in stats['s_per_iter'] if v) or '-'
        walls = ', '.join(f'{v:.0f}' + ('*' if resumed else '')
                          for v, resumed in zip(stats['wall_s'], stats['resumed']))
        use = ', '.join(f'{statistics.mean(u.values()):.3f}' for u in stats['usage'] if u) or '-'
        md.append(f'| {label} | {fmt(stats)} | {spi} | {walls} | {use} |')
    if any(any(table[a]['resumed']) for a in names if table.get(a)):
        md += ['', '\\* resumed from its last checkpoint after a session ended: the wall time '
               'counts the resumed part only.']
    pilot = {k: results.get(f'pilot_{k}') for k in PILOT_OPTIONS}
    if all(pilot.values()):
        md += ['', f'Pilot (seed 0, {PILOT_ITERS} fine-tuning iterations from P; the rule is in '
               f'the tool\'s docstring): chosen option {choose_pilot(pilot)}.', '',
               f'| option | gate optimiser entry | loss it. {PILOT_ITERS - 19}-{PILOT_ITERS} | '
               'mean SK use | mAP |',
               '| --- | --- | --- | --- | --- |']
        for k, r in pilot.items():
            md.append(f'| {k} | {PILOT_OPTIONS[k]} | {late_loss(r):.4f} | '
                      f'{mean_usage(r):.4f} | {r["metrics"]["bbox_mAP"]:.3f} |')
    arms = [a for a in ('ft_seedsk', 'ft_safesk', 'scratch_sk')
            if table.get(a) and table[a]['usage'][0]]
    if arms:
        md += ['', 'SK use per site, ‖out − x‖ / ‖x‖ on the first '
               f'{args.usage_images} val images, mean over seeds (gated SK: and the mean '
               '|gate|):', '']
        site_names = list(table[arms[0]]['usage'][0])
        md.append('| site | ' + ' | '.join(names[a] for a in arms) + ' |')
        md.append('| --- |' + ' --- |' * len(arms))
        for site in site_names:
            cells = []
            for a in arms:
                cell = f'{statistics.mean(u[site] for u in table[a]["usage"]):.4f}'
                gates = [g[site] for g in table[a]['gates'] if g]
                if gates:
                    cell += f' (\\|s\\| {statistics.mean(gates):.3f})'
                cells.append(cell)
            md.append(f'| {site} | ' + ' | '.join(cells) + ' |')
    md += ['', 'Verdicts:', ''] + [f'- {line}' for line in lines]
    os.makedirs(osp.join(ROOT, args.report_dir), exist_ok=True)
    base = osp.join(ROOT, args.report_dir, 'sk_study')
    with open(base + '.md', 'w') as f:
        f.write('\n'.join(md) + '\n')
    with open(base + '.json', 'w') as f:
        json.dump(dict(table=table, verdicts=lines,
                       runs={k: {kk: vv for kk, vv in v.items() if kk != 'loss'}
                             for k, v in results.items() if isinstance(v, dict)
                             and 'metrics' in v}), f, indent=1)
    shown = [a for a in names if table.get(a)]
    fig, ax = plt.subplots(figsize=(10, 4.5))
    for i, arm in enumerate(shown):
        stats = table[arm]
        ax.errorbar(i, stats['mean'], yerr=stats['std'], fmt='o', capsize=6, color='C0')
        ax.scatter([i] * len(stats['values']), stats['values'], marker='x', color='C1',
                   zorder=3)
    ax.set_xticks(range(len(shown)))
    ax.set_xticklabels([textwrap.fill(names[a], 16) for a in shown], fontsize=7)
    ax.set_ylabel('COCO bbox mAP (200 val images)')
    ax.set_title('SK study on the demo set: mean ± std over seeds (x: each seed)')
    ax.grid(axis='y', alpha=0.3)
    fig.tight_layout()
    fig.savefig(base + '.png', dpi=120)
    print('\n'.join(md))
    print(f'\nwritten: {base}.md, {base}.json, {base}.png')


def main():
    args = parse_args()
    if not args.report:
        study(args)
    report(collect(args), args)


if __name__ == '__main__':
    main()
