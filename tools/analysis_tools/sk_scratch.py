#!/usr/bin/env python
# Copyright (c) mmdet-sk contributors. All rights reserved.
"""From scratch, where SK is the architecture: SK detectors against plain, paired seeds, demo set.

    python tools/analysis_tools/sk_scratch.py            # or: make scratch
    python tools/analysis_tools/sk_scratch.py --report   # only rebuild the report
    python tools/analysis_tools/sk_scratch.py --families frcnn --arms frcnn_sk  # a part

Every run is ``tools/train.py`` on a config derived from a demo config (written beside its
results). A finished run's result is kept under ``--work-dir`` and in ``--store`` (committed)
and is not run again; a training cut off by the end of a session resumes from its last
checkpoint. The protocol, fixed here before any run:

1. **Arms**, in two families, every one trained from scratch (no ImageNet, no trained
   detector: SK learns with the network from the first step, as in the paper and as
   MMDetection trains YOLOX):

   * YOLOX (``configs/demo/yolox_tiny_shapes.py``: YOLOX-tiny, MMDetection's recipe scaled to
     the demo's 192 px): ``yolox_plain``; ``yolox_sk``, SK where ``yolox_s_sk`` puts it (after
     CSPDarknet stages 2-4 and on the 3 PAFPN outputs, gated as shipped,
     ``configs/demo/yolox_tiny_sk_shapes.py``); ``yolox_sk_ungated``, the same SK with
     ``gate=False`` (from scratch the gate protects no trained weights: does it cost?).
   * Faster R-CNN (the demo's, 128-channel FPN): ``frcnn_plain`` (``make demo-baseline``'s
     ResNet-18); ``frcnn_sknet18``, SKNet-18 as the backbone (timm's skresnet18 form, SK as
     the architecture, ``configs/demo/faster-rcnn_sknet18_fpn_shapes.py``); ``frcnn_sk``, the
     R-18 with gated SK plugins and neck SK that ``make demo`` trained so far.

2. **Paired seeds** 0, 1, 2: every arm runs every seed. The seed fixes the data order and the
   augmentation. The arms of a family also start from the same weights wherever they share
   them: per family and seed, the family's plain detector is built and initialised under the
   seed and saved (``init_<family>_s<seed>.pth``), and every arm of the family loads it
   (``load_from``); what only an arm has (its SK blocks, SKNet's SK units) keeps its own
   initialisation under the seed. Order: family by family (YOLOX first), seed-major.

3. **Schedules**, fixed from the plain arms and the 2-core budget, never from an SK result:
   Faster R-CNN 500 iterations (the demo's schedule, chosen for the plain demo: AdamW 1.5e-3,
   cosine); YOLOX 10 epochs (1,000 iterations of batch 8: the longest that keeps a YOLOX run,
   and so ``make demo``, near 15 minutes on 2 cores), validation every 2 epochs so that the
   plain arm's curve shows how far it has converged (reported, not used to choose).

   YOLOX pilot (added after the first YOLOX run and before any SK run; chosen on the plain
   arm alone): with MMDetection's Mosaic + RandomAffine pipeline, the plain arm (seed 0) had
   0.002 mAP after 2 epochs and 0.004 after 4 of 10, so that run was stopped and the YOLOX
   demo config now uses the recipe's last-epochs pipeline (resize, HSV, flip, pad)
   throughout. Before the YOLOX family runs, the lab trains its plain arm once with seed
   100, which no comparison uses: its curve is reported, and if it ends below 0.1 mAP the
   YOLOX family is not run (the recipe does not learn the demo within the budget) and the
   report says so.

4. **Metric**: COCO bbox mAP on the 200 val images at the end of the schedule (YOLOX: its EMA
   weights, as MMDetection evaluates YOLOX).

5. **Rule** (:func:`sk_lab.stats.paired_verdict`, the ablation's): for each SK arm, the paired
   difference to its family's plain arm counts (``higher``/``lower``) when every seed's
   difference has the sign of the mean, ``|mean| >= 0.005`` mAP and the paired t statistic
   reaches the one-sided 5% critical value (2.92 for 3 seeds); otherwise "no difference".
   The gate's cost: ``yolox_sk_ungated`` against ``yolox_sk``, by the same rule.

6. **What ``make demo`` trains**: among the SK arms with a shipped demo config (``yolox_sk``,
   ``frcnn_sknet18``, ``frcnn_sk``), the one that beats its plain arm by the rule, the largest
   mean difference if several; if none does, the one with the largest mean paired difference
   to its plain arm (the demo then says that it does not beat plain). Until every seed has run,
   ``make demo`` keeps ``frcnn_sk`` and shows the partial result.

7. **Cost** per arm: params and FLOPs (MMEngine's counter) at 192 x 192, and the train step
   (batch 1, forward + backward) against the family's plain arm, median of interleaved rounds
   in one process.

Size: 6 arms x 3 seeds = 18 trainings: YOLOX about 0.5-0.8 s/iteration, Faster R-CNN 1.3-2.5
on 2 cores, about 5 hours with the validations: more than one session; ``make scratch``
continues where the last one stopped. Outputs: ``--report-dir``/sk_scratch.{md,json,png}.
"""
import os.path as osp
import statistics
import time

from sk_lab.cost import detector_costs
from sk_lab.report import md_table, seed_plot, write_json, write_text
from sk_lab.runs import (ROOT, collect, experiment_parser, initial_weights, kept, stored,
                         train_run)
from sk_lab.stats import fmt, paired_difference, paired_verdict, summary

YOLOX = 'configs/demo/yolox_tiny_shapes.py'
YOLOX_SK = 'configs/demo/yolox_tiny_sk_shapes.py'
FRCNN = 'configs/demo/faster-rcnn_r18_fpn_shapes.py'
FRCNN_SK = 'configs/demo/faster-rcnn_r18_sk_fpn_shapes.py'
SKNET18 = 'configs/demo/faster-rcnn_sknet18_fpn_shapes.py'
SEEDS = (0, 1, 2)
DEMO_SHAPE = (192, 192)
YOLOX_VAL_INTERVAL = 2
#: the YOLOX pilot: the plain arm with a seed no comparison uses, and the mAP it must reach
PILOT_SEED = 100
PILOT_MIN_MAP = 0.1

#: family -> (label, its plain arm)
FAMILIES = {
    'yolox': ('YOLOX-tiny', 'yolox_plain'),
    'frcnn': ('Faster R-CNN', 'frcnn_plain'),
}
#: arm -> (family, label, config, gate: set on every SK module, None: as the config has it)
ARMS = {
    'yolox_plain': ('yolox', 'YOLOX-tiny, plain', YOLOX, None),
    'yolox_sk': ('yolox', 'YOLOX-tiny + SK (gated, as yolox_s_sk)', YOLOX_SK, None),
    'yolox_sk_ungated': ('yolox', 'YOLOX-tiny + SK without the gate', YOLOX_SK, False),
    'frcnn_plain': ('frcnn', 'Faster R-CNN R-18, plain', FRCNN, None),
    'frcnn_sknet18': ('frcnn', 'Faster R-CNN SKNet-18', SKNET18, None),
    'frcnn_sk': ('frcnn', 'Faster R-CNN R-18 + SK (gated plugins and neck)', FRCNN_SK, None),
}
SK_ARMS = [a for a in ARMS if a not in {p for _, p in FAMILIES.values()}]
#: SK arms with a shipped demo config, in the order ``make demo`` prefers them on a tie
DEMO_CANDIDATES = ('frcnn_sk', 'frcnn_sknet18', 'yolox_sk')
#: the comparisons outside "SK arm against its plain arm": (arm, against)
GATE_COMPARISON = ('yolox_sk_ungated', 'yolox_sk')
UNDECIDED_DEMO = 'frcnn_sk'


def parse_args(argv=None):
    parser = experiment_parser('sk_scratch', __doc__.splitlines()[0], usage_images=0)
    parser.add_argument('--families', nargs='*', choices=list(FAMILIES),
                        default=list(FAMILIES),
                        help='families to run, in this order (none: the cost and the report)')
    parser.add_argument('--arms', nargs='+', choices=list(ARMS), default=list(ARMS),
                        help='arms to train (all by default); two processes with other arms '
                        'share the machine without training the same run')
    parser.add_argument('--no-cost', action='store_true', help='skip the cost measurement')
    return parser.parse_args(argv)


def _yolox_validation(cfg) -> None:
    cfg.train_cfg.val_interval = YOLOX_VAL_INTERVAL


def arm_run(arm: str, seed: int, **kw) -> dict:
    """The run of ``arm`` for ``seed`` (no initial weights: see :func:`plan`)."""
    family, _, config, gate = ARMS[arm]
    run = dict(name=f'{arm}_s{seed}', arm=arm, family=family, seed=seed, config=config,
               gate=gate, edit=_yolox_validation if family == 'yolox' else None)
    run.update(kw)
    return run


def pilot_run() -> dict:
    """The YOLOX pilot: the plain arm under :data:`PILOT_SEED` (protocol, item 3)."""
    return arm_run('yolox_plain', PILOT_SEED, name=f'pilot_yolox_plain_s{PILOT_SEED}',
                   phase='pilot')


def init_path(family: str, seed: int, args) -> str:
    return osp.join(args.work_dir, f'init_{family}_s{seed}.pth')


def plan(families, args, digests=None) -> list:
    """The trainings in the order they run: family by family, seed-major, arms in ``ARMS``
    order; each loads its family's initial weights for its seed (``digests``: their
    :func:`weights_digest`, which a kept result must match)."""
    runs = []
    for family in families:
        for seed in SEEDS:
            for arm, (fam, *_) in ARMS.items():
                if fam == family:
                    path = init_path(family, seed, args)
                    runs.append(arm_run(arm, seed, load_from=path,
                                        depends_on=(digests or {}).get(path)))
    return runs


@kept
def cost_run(run, args, work_dir, config):
    """Params, FLOPs and train-step time of every arm against its family's plain arm."""
    print(f'[{time.strftime("%H:%M:%S")}] cost of every arm', flush=True)
    baselines = {arm: FAMILIES[ARMS[arm][0]][1] for arm in ARMS}
    cost = detector_costs({arm: arm_run(arm, 0) for arm in ARMS}, baselines, work_dir,
                          DEMO_SHAPE, run['rounds'])
    return dict(stored(run), shape=DEMO_SHAPE, **cost)


def scratch(args) -> None:
    from mmdet_sk.datasets import ensure_demo_data
    ensure_demo_data(osp.join(ROOT, args.data_root))
    digests = {}
    for family in args.families:
        plain_config = ARMS[FAMILIES[family][1]][2]
        for seed in SEEDS:
            path = init_path(family, seed, args)
            digests[path] = initial_weights(plain_config, seed, path)
    families = list(args.families)
    if 'yolox' in families:
        pilot = train_run(pilot_run(), args)
        if pilot['metrics']['bbox_mAP'] < PILOT_MIN_MAP:
            print(f'YOLOX pilot: {pilot["metrics"]["bbox_mAP"]:.3f} mAP < {PILOT_MIN_MAP}: '
                  'the YOLOX family is not run', flush=True)
            families.remove('yolox')
    for run in plan(families, args, digests):
        if run['arm'] in args.arms:
            train_run(run, args)
    if not args.no_cost:
        cost_run(dict(name='cost', config=FRCNN, seed=0, rounds=15), args)


# --------------------------------------------------------------------------- report


def arm_table(results: dict) -> dict:
    """Per arm: mAP summary, per-seed mAP, the paired differences of the rule, speed."""
    runs = {arm: {} for arm in ARMS}
    for r in results.values():
        if r.get('arm') in runs and 'metrics' in r and r.get('phase') != 'pilot':
            runs[r['arm']][r['seed']] = r
    maps = {arm: {s: r['metrics']['bbox_mAP'] for s, r in sorted(rs.items())}
            for arm, rs in runs.items()}
    table = {}
    for arm, (family, label, config, _) in ARMS.items():
        mine = maps[arm]
        entry = dict(family=family, label=label, config=config, per_seed=mine,
                     mAP=summary(list(mine.values())))
        plain = FAMILIES[family][1]
        if arm != plain:
            entry['vs_plain'] = paired_difference(mine, maps[plain])
            entry['vs_plain_verdict'] = paired_verdict(entry['vs_plain'])
        if arm == GATE_COMPARISON[0]:
            entry['vs_gated'] = paired_difference(mine, maps[GATE_COMPARISON[1]])
            entry['vs_gated_verdict'] = paired_verdict(entry['vs_gated'])
        ordered = [r for _, r in sorted(runs[arm].items())]
        entry['s_per_iter'] = [r.get('s_per_iter') for r in ordered]
        entry['wall_s'] = [r.get('wall_s') for r in ordered]
        entry['resumed'] = [bool(r.get('resumed')) for r in ordered]
        entry['val_curve'] = {r['seed']: r.get('val_curve') for r in ordered}
        table[arm] = entry
    return table


def demo_choice(table: dict, min_n: int = 3) -> dict:
    """What ``make demo`` trains, by rule 6 of the protocol."""
    def pair(arm):
        e = table[arm]
        return dict(arm=arm, config=e['config'], plain_arm=FAMILIES[e['family']][1],
                    plain_config=ARMS[FAMILIES[e['family']][1]][2])

    pending = [a for a in DEMO_CANDIDATES
               if table[a].get('vs_plain') is None or table[a]['vs_plain']['n'] < min_n]
    if pending:
        return dict(pair(UNDECIDED_DEMO), decided=False, beats_plain=False,
                    why=f'not all seeds have run yet ({", ".join(pending)}): the demo stays '
                    f'{UNDECIDED_DEMO}')
    winners = [a for a in DEMO_CANDIDATES if table[a]['vs_plain_verdict'] == 'higher']
    pool = winners or list(DEMO_CANDIDATES)
    best = max(pool, key=lambda a: (table[a]['vs_plain']['mean'], -DEMO_CANDIDATES.index(a)))
    diff = table[best]['vs_plain']
    if winners:
        why = (f'{best} beats its plain arm by {diff["mean"]:+.3f} mAP (paired, {diff["n"]} '
               'seeds, the rule)')
    else:
        why = (f'no SK arm beats its plain arm by the rule; {best} comes closest '
               f'({diff["mean"]:+.3f} mAP, paired, {diff["n"]} seeds)')
    return dict(pair(best), decided=True, beats_plain=bool(winners), why=why)


def _paired_cell(diff, verdict) -> str:
    if diff is None:
        return 'not run yet'
    return f'{fmt(diff)}, {diff["wins"]}/{diff["n"]}: {verdict}'


def _cost_cell(cost: dict) -> str:
    return (f'{cost["params"] / 1e6:.2f}M, {cost["flops"] / 1e9:.2f}G, '
            f'x{cost["train_step_ratio"]:.2f}' if cost else '')


def report(results: dict, args) -> dict:
    table = arm_table(results)
    demo = demo_choice(table)
    cost = results.get('cost') or {}
    md = ['# SK from scratch on the demo set', '',
          'Produced by `python tools/analysis_tools/sk_scratch.py` (`make scratch`); the '
          "protocol and the rule are in the tool's docstring. mAP: COCO bbox mAP on the 200 "
          'val images at the end of the schedule (Faster R-CNN 500 iterations, YOLOX-tiny 10 '
          'epochs = 1,000 iterations, its EMA weights), every arm trained from scratch; paired '
          'differences are per seed (the same seeds, data order and initial weights of the '
          'shared parts in every arm of a family), "wins" counts the seeds where the SK arm is '
          'higher.', '']
    rows = []
    for arm, e in table.items():
        rows.append([e['label'], fmt(e['mAP']),
                     _paired_cell(e.get('vs_plain'), e.get('vs_plain_verdict'))
                     if 'vs_plain' in e else '',
                     _cost_cell(cost.get('arms', {}).get(arm)),
                     ', '.join(f'{s:.2f}' for s in e['s_per_iter'] if s)])
    md += md_table(['arm', 'mAP mean ± std (seeds)', 'paired diff. to its plain arm (wins)',
                    'params, FLOPs, train step / plain', 's/iter (per seed)'], rows)
    md += ['', 's/iter: the median of each training run, as the machine was then (other runs '
           'shared it): not a cost comparison; the cost column is one.']
    ungated = table[GATE_COMPARISON[0]]
    md += ['', 'The gate from scratch: SK without the gate against the gated SK (YOLOX-tiny): '
           f'{_paired_cell(ungated.get("vs_gated"), ungated.get("vs_gated_verdict"))}.']
    pilot = results.get(pilot_run()['name'])
    if pilot:
        verdict = ('the YOLOX family runs' if pilot['metrics']['bbox_mAP'] >= PILOT_MIN_MAP else
                   'below it: the YOLOX family is not run')
        md += ['', f'YOLOX pilot (the plain arm, seed {PILOT_SEED}; protocol, item 3): mAP by '
               'epoch ' + ', '.join(f'{step}: {v:.3f}' for step, v in pilot['val_curve']) +
               f'; at least {PILOT_MIN_MAP} was needed: {verdict}.']
    curves = {s: c for s, c in table['yolox_plain']['val_curve'].items() if c}
    if curves:
        md += ['', 'The plain YOLOX-tiny\'s validation mAP by epoch (its convergence within the '
               'schedule): ' + '; '.join(
                   f'seed {s}: ' + ', '.join(f'{step}: {v:.3f}' for step, v in c)
                   for s, c in sorted(curves.items())) + '.']
    if cost:
        md += ['', f'Cost at {cost["shape"][0]} x {cost["shape"][1]}, batch 1: params, FLOPs '
               "(MMEngine's counter), train step (forward + backward) relative to the family's "
               f'plain arm, median of {cost["rounds"]} interleaved rounds in one process '
               f'({cost["threads"]} thread{"s" if cost["threads"] != 1 else ""}, load average {cost["load_avg"]:.1f} at the end).']
    md += ['', f'`make demo` (rule 6): {demo["why"]}.']
    base = osp.join(ROOT, args.report_dir, 'sk_scratch')
    write_text(base + '.md', md)
    write_json(base + '.json', dict(
        table=table, demo=demo, cost=cost or None,
        runs={k: {kk: vv for kk, vv in v.items() if kk != 'loss'} for k, v in results.items()}))
    seed_plot(base + '.png', [
        ('mAP per arm', 'COCO bbox mAP (200 val images)',
         [(e['label'], e['mAP']) for e in table.values()]),
        ('paired difference to the plain arm', 'mAP(SK arm) - mAP(plain), per seed',
         [(table[a]['label'], table[a].get('vs_plain')) for a in SK_ARMS]),
    ], 'SK from scratch on the demo set: mean ± std over seeds (x: each seed)',
        zero_line=[False, True])
    print('\n'.join(md))
    print(f'\nwritten: {base}.md, {base}.json, {base}.png')
    return demo


def main():
    args = parse_args()
    if not args.report:
        scratch(args)
    report(collect(args.store), args)


if __name__ == '__main__':
    main()
