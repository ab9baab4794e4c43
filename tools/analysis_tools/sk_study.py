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
3. ``step 0``: P evaluated in three configs before any training: plain, SK without the gate
   (``gate=False``, the reference block; seeds 0-2: the SK weights are random), SK with the
   gate (must equal P).
4. ``fine-tune``: from P, 200 iterations (two epochs of the 800 training images; AdamW lr
   5e-4, 20 iterations warm-up, cosine to 5e-5), arms plain / ungated SK / gated SK, seeds
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
import os.path as osp
import statistics

from sk_lab.report import seed_plot, write_json, write_text
from sk_lab.runs import FT_ITERS, ROOT, collect, gate_keys, set_gate_keys, test_run, train_run
from sk_lab.stats import MIN_DIFF, fmt, spread_verdict, summary

PLAIN = 'configs/demo/faster-rcnn_r18_fpn_shapes.py'
SK = 'configs/demo/faster-rcnn_r18_sk_fpn_shapes.py'
SEEDS = (0, 1, 2)
SCRATCH_ITERS = 500
PILOT_ITERS = 80
ARMS = {  # arm -> (label, config, gate)
    'plain': ('plain', PLAIN, None),
    'ungated': ('SK without the gate (the reference block)', SK, False),
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


def pilot_edit(option: str):
    """The config edit of pilot option ``option``: its optimiser entry for the gate."""
    return lambda cfg: set_gate_keys(cfg, PILOT_OPTIONS[option])


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
    p_ckpt = p['checkpoint']  # relative to the repository, as every run's load_from
    if args.stop_after == 'P':
        return results

    pilots = {}
    for option in PILOT_OPTIONS:
        pilots[option] = results[f'pilot_{option}'] = train_run(
            dict(name=f'pilot_{option}', arm='pilot', seed=0, iters=PILOT_ITERS, config=SK,
                 gate=True, pilot=option, edit=pilot_edit(option), finetune=True,
                 load_from=p_ckpt), args)
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
        for seed in (SEEDS if arm == 'ungated' else (0, )):
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


# --------------------------------------------------------------------------- report


def arm_runs(results, arm):
    return [r for r in results.values() if r.get('arm') == arm]


def verdicts(table):
    """Plain statements of what the numbers support, with the rule each one uses.

    A difference counts when the arms' means differ by more than the larger of their two
    seed standard deviations (and by more than ``MIN_DIFF`` = 0.005 mAP); otherwise it is
    within the seed spread.
    """
    lines = []

    def compare(a, b, what):
        sa, sb = table.get(a), table.get(b)
        verdict = spread_verdict(sa, sb)
        if verdict is None:
            lines.append(f'{what}: not all seeds have run yet')
            return
        spread = max(sa['std'], sb['std'], MIN_DIFF)
        lines.append(f'{what}: {sa["mean"]:.3f} vs {sb["mean"]:.3f} mAP (difference '
                     f'{sa["mean"] - sb["mean"]:+.3f}, spread {spread:.3f}): {verdict}')

    compare('ft_safesk', 'ft_plain', 'Fine-tuned, gated SK vs plain')
    compare('ft_ungated', 'ft_plain', 'Fine-tuned, ungated SK vs plain')
    compare('ft_safesk', 'ft_ungated', 'Fine-tuned, gated SK vs ungated SK')
    compare('scratch_sk', 'scratch_plain', 'From scratch, gated SK vs plain')
    return lines


def report(results, args):
    table = {}
    for arm in ('step0_plain', 'step0_ungated', 'step0_safesk', 'ft_plain', 'ft_ungated',
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
        'step0_ungated': 'P + ungated SK (step 0, random SK)',
        'step0_safesk': 'P + gated SK (step 0)',
        'ft_plain': f'fine-tuned {FT_ITERS} it., plain',
        'ft_ungated': f'fine-tuned {FT_ITERS} it., ungated SK',
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
    arms = [a for a in ('ft_ungated', 'ft_safesk', 'scratch_sk')
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
    base = osp.join(ROOT, args.report_dir, 'sk_study')
    write_text(base + '.md', md)
    write_json(base + '.json', dict(
        table=table, verdicts=lines,
        runs={k: {kk: vv for kk, vv in v.items() if kk != 'loss'}
              for k, v in results.items() if isinstance(v, dict) and 'metrics' in v}))
    seed_plot(base + '.png', [('', 'COCO bbox mAP (200 val images)',
                               [(names[a], table.get(a)) for a in names])],
              'SK study on the demo set: mean ± std over seeds (x: each seed)')
    print('\n'.join(md))
    print(f'\nwritten: {base}.md, {base}.json, {base}.png')


def main():
    args = parse_args()
    if not args.report:
        study(args)
    report(collect(args.work_dir), args)


if __name__ == '__main__':
    main()
