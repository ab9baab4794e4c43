#!/usr/bin/env python
# Copyright (c) mmdet-sk contributors. All rights reserved.
"""Which SK to use: a paired ablation of SK's forms and places on the demo, fine-tuned from P.

    python tools/analysis_tools/sk_ablation.py            # or: make ablation
    python tools/analysis_tools/sk_ablation.py --report   # only rebuild the report

Every run is ``tools/train.py`` / ``tools/test.py`` on a config derived from the demo configs
(written beside its results). Each finished run leaves ``result.json`` under ``--work-dir`` and
is skipped when the tool starts again; a training cut off by the end of a session resumes
from its last checkpoint (exactly). The protocol, fixed here before any run:

1. ``P``: the plain demo detector, seed 0, 500 iterations from scratch (``make
   demo-baseline``, the study's P). Trained here unless ``--p-checkpoint`` names that run's
   checkpoint (then P is evaluated, not trained again).
2. ``step 0``: P evaluated in every SK arm's config before any training: each must give P's
   COCO metrics exactly (the gated SK starts as the identity; SKConv as P's conv2); the
   report names any arm that does not.
3. ``fine-tune``: from P, the study's recipe (200 iterations = two epochs of the 800 training
   images, AdamW lr 5e-4, 20 iterations warm-up, cosine to 5e-5; the gate's optimiser entry
   of the arm's config), **paired seeds** 0, 1, 2 (every arm runs every seed; the seed fixes
   the data order and the SK initialisation), seed-major (all arms of seed 0 first). Arms:

   * ``plain``: the plain demo config;
   * ``shipped``: the SK demo config as shipped (``configs/demo/faster-rcnn_r18_sk_fpn_shapes.py``):
     gated SKAttention after conv1 of the BasicBlocks of c3-c5 and on the 4 FPN outputs, the
     reference's linear Fuse, kernels (3, 3) dilations (1, 2), the gate without weight decay and at
     10x the learning rate;
   * ``backbone``: ``shipped`` without the neck's SK (the plain FPN);
   * ``neck``: ``shipped`` without the backbone's SK;
   * ``paper_fuse``: ``shipped`` with the paper's Fuse ``ReLU(LN(fc(s)))`` (``fuse_cfg=dict()``);
   * ``skconv``: SK as a convolution (the SKNet form): conv2 of the BasicBlocks of c3-c5 as a
     gated SKConv holding P's trained conv2 (``configs/demo/faster-rcnn_r18_skconv_fpn_shapes.py``);
     as that config is, it differs from ``shipped`` in three ways, not one: the SK form, no SK
     on the neck, and the paper's Fuse (SKConv's groups are the slot's, 1). (This sentence was
     added after seed 1 ran: a correction of the description, not of the arms or the rule.
     The report adds ``skconv`` against ``backbone``, the arm with SK in the same place, as a
     comparison outside the rule.)
   * ``gate_lr1x`` (the cause arm): ``shipped`` with the gate at 1x the learning rate (still
     no weight decay). Hypothesis, named before it runs: the gated SK loses to plain because
     the 10x gate (chosen by the study's pilot for SK *use*, not for mAP) opens the gates
     faster than SK's randomly initialised branches become useful, so SK adds untrained
     features to P's trained ones; at 1x it should lose less (or win). Refuted if
     ``gate_lr1x`` is not higher than ``shipped`` by the rule below.

4. ``scale``: ``tools/analysis_tools/sk_scale_analysis.py`` (input scales 0.5-2.0, 40 test
   images) on each SK arm's seed-0 checkpoint and on one from-scratch SK run (the SK demo, seed
   0, 500 iterations = ``make demo``; trained here unless ``--scratch-checkpoint`` names it):
   per site, does the weight of the branch with the larger receptive field rise as the input
   is enlarged (SKNet's Fig. 3 test), and by how much.
5. ``cost``: per arm, params and FLOPs (MMEngine's counter) at the demo's 192 x 192, and the
   train-step time (batch 1, forward + backward) relative to ``plain``, median of interleaved
   rounds in one process.

Reported per arm: mAP mean ± std with every seed; the paired difference to ``plain`` and to
``shipped`` (mean ± std over seeds and how many seeds it wins); SK use per site (``||out -
x|| / ||x||``; SKConv: against the conv it replaced); the scale line; the cost.

**Rule** (:mod:`sk_lab.stats`, fixed before the results): a paired difference
counts (``higher``/``lower``) when, over the 3 seeds, every seed's difference has the sign of
the mean, ``|mean| >= 0.005`` mAP and ``|mean| / (std / sqrt(3)) >= 2.92`` (paired t,
one-sided 5%); otherwise "no difference". The shipped default becomes the arm whose
difference to ``shipped`` is ``higher`` (the largest such, if several); if none, the shipped
configs stay as they are. A difference to ``plain`` says whether SK in that form helps the
demo at all.

Size, chosen for this 2-core machine (about 2.5 s/iteration): 7 arms x 3 seeds x 200
iterations + P 500 + scratch 500 = 5,200 training iterations, about 4-5 hours with the
evaluations; 5 seeds would double the fine-tuning and do not fit. Outputs:
``--report-dir``/sk_ablation.{md,json,png}.
"""
import os.path as osp
import statistics
import sys
import time

from sk_lab.cost import detector_costs
from sk_lab.report import md_table, seed_plot, write_json, write_text
from sk_lab.runs import (FT_ITERS, ROOT, collect, experiment_parser, kept, kept_result, repo_path, save_result,
                         set_gate_keys, set_sk_option, sh, stored, test_run, train_run,
                         weights_digest)
from sk_lab.stats import choose_default, fmt, paired_difference, paired_verdict, summary

PLAIN = 'configs/demo/faster-rcnn_r18_fpn_shapes.py'
SK = 'configs/demo/faster-rcnn_r18_sk_fpn_shapes.py'
SKCONV = 'configs/demo/faster-rcnn_r18_skconv_fpn_shapes.py'
SEEDS = (0, 1, 2)
SCRATCH_ITERS = 500
SCALES = (0.5, 1.0, 1.5, 2.0)
SCALE_IMAGES = 40
DEMO_SHAPE = (192, 192)
SHIPPED = 'shipped'


def _neck_without_sk(cfg) -> None:
    cfg.model.neck = cfg.model.neck['neck']  # PluginNeck(neck=FPN, ...) -> the FPN


def _backbone_without_sk(cfg) -> None:
    cfg.model.backbone.plugins = None


def _paper_fuse(cfg) -> None:
    set_sk_option(cfg, 'fuse_cfg', dict())


def _gate_lr1x(cfg) -> None:
    set_gate_keys(cfg, dict(decay_mult=0.0))


#: arm -> (label, base config, config edit or None)
ARMS = {
    'plain': ('plain', PLAIN, None),
    'shipped': ('shipped SK (backbone + neck)', SK, None),
    'backbone': ('SK in the backbone only', SK, _neck_without_sk),
    'neck': ('SK on the neck only', SK, _backbone_without_sk),
    'paper_fuse': ("shipped SK, paper's Fuse", SK, _paper_fuse),
    'skconv': ('SKConv in the backbone (SKNet form)', SKCONV, None),
    'gate_lr1x': ('shipped SK, gate lr 1x', SK, _gate_lr1x),
}
SK_ARMS = [a for a in ARMS if a != 'plain']


def parse_args(argv=None):
    parser = experiment_parser('sk_ablation', __doc__.splitlines()[0], usage_images=50)
    parser.add_argument('--p-checkpoint',
                        help='P\'s checkpoint (the plain demo, seed 0, 500 iterations, e.g. '
                        'from make demo-baseline) instead of training P here')
    parser.add_argument('--scratch-checkpoint',
                        help='the SK demo\'s checkpoint (seed 0, 500 iterations, e.g. from '
                        'make demo) for the from-scratch scale analysis, instead of training it')
    parser.add_argument('--stop-after', choices=['P', 'step0', 'finetune', 'scale'],
                        help='stop after this phase')
    return parser.parse_args(argv)


def arm_run(arm: str, seed: int, **kw) -> dict:
    """The run of ``arm`` for ``seed``: its base config and edit, gated SK."""
    _, config, edit = ARMS[arm]
    return dict(arm=arm, seed=seed, config=config, edit=edit,
                gate=None if arm == 'plain' else True, **kw)


def plan(p_ckpt: str, p_digest: str = None):
    """The fine-tuning runs in the order they run: seed-major, arms in ``ARMS`` order."""
    return [arm_run(arm, seed, name=f'ft_{arm}_s{seed}', phase='finetune', iters=FT_ITERS,
                    finetune=True, load_from=p_ckpt, depends_on=p_digest)
            for seed in SEEDS for arm in ARMS]


# --------------------------------------------------------------------------- scale, cost


@kept
def scale_run(run, args, work_dir, config):
    """``sk_scale_analysis.py`` on ``run['checkpoint']`` in the run's config; its summary."""
    import json

    from mmdet_sk.analysis import large_kernel_summary
    from mmdet_sk.datasets import data_root_options
    print(f'[{time.strftime("%H:%M:%S")}] {run["name"]}: scale analysis', flush=True)
    start = time.time()
    out_dir = osp.join(work_dir, 'scale')
    sh([sys.executable, 'tools/analysis_tools/sk_scale_analysis.py', config, run['checkpoint'],
        '--scales', *map(str, SCALES), '--num-images', str(SCALE_IMAGES), '--out-dir', out_dir,
        '--device', 'cpu', '--cfg-options'] + data_root_options(args.data_root),
       osp.join(work_dir, 'run.log'))
    with open(osp.join(out_dir, 'sk_scale_weights.json')) as f:
        verdicts = json.load(f)['verdicts']['all']
    return dict(stored(run), wall_s=round(time.time() - start, 1),
                sites={name: dict(rises=v['rises'], change=v['change'], rho=v['rho'],
                                  trend=v['trend']) for name, v in verdicts.items()},
                summary=large_kernel_summary(verdicts))


@kept
def cost_run(run, args, work_dir, config):
    """Params, FLOPs and train-step time of every arm, the time relative to ``plain``."""
    print(f'[{time.strftime("%H:%M:%S")}] cost of every arm', flush=True)
    cost = detector_costs({arm: arm_run(arm, 0) for arm in ARMS}, {arm: 'plain' for arm in ARMS},
                          work_dir, DEMO_SHAPE, run['rounds'])
    return dict(name=run['name'], seed=0, shape=DEMO_SHAPE, rounds=run['rounds'], **cost)


# --------------------------------------------------------------------------- the ablation


def p_model(args):
    """P's checkpoint (relative to the repository) and its :func:`weights_digest`: given, or
    trained here (again, when the checkpoint of a kept P is gone with the session that
    trained it)."""
    if args.p_checkpoint:
        ckpt = repo_path(args.p_checkpoint)
        digest = weights_digest(osp.join(ROOT, ckpt))
        p = test_run(dict(name='P', arm='P', seed=0, config=PLAIN, load_from=ckpt,
                          depends_on=digest, source='--p-checkpoint'), args)
    else:
        p = train_run(dict(name='P', arm='P', seed=0, iters=SCRATCH_ITERS, config=PLAIN,
                           need_checkpoint=True), args)
        ckpt = p['checkpoint']
        digest = p.get('digest') or weights_digest(osp.join(ROOT, ckpt))
    if p.get('digest') != digest:
        save_result('P', dict(p, digest=digest), args)
    return ckpt, digest


def ablation(args):
    from mmdet_sk.datasets import ensure_demo_data
    ensure_demo_data(osp.join(ROOT, args.data_root))
    p_ckpt, p_digest = p_model(args)
    print(f'P: {p_ckpt} (weights sha256 {p_digest[:12]})', flush=True)
    if args.stop_after == 'P':
        return

    for arm in SK_ARMS:
        test_run(arm_run(arm, 0, name=f'step0_{arm}', phase='step0', load_from=p_ckpt,
                         depends_on=p_digest), args)
    if args.stop_after == 'step0':
        return

    for run in plan(p_ckpt, p_digest):
        scale = None
        if run['seed'] == SEEDS[0] and run['arm'] != 'plain':  # scale analysis of seed 0
            scale = arm_run(run['arm'], 0, name=f'scale_{run["arm"]}', phase='scale',
                            depends_on=p_digest)
            # its checkpoint must be on disk until the scale analysis has run
            run['need_checkpoint'] = kept_result(scale, args) is None
        result = train_run(run, args)
        if scale is not None:
            scale_run(dict(scale, checkpoint=result['checkpoint']), args)
    if args.stop_after == 'finetune':
        return

    scale = arm_run('shipped', 0, name='scale_scratch_shipped', phase='scale', scratch=True)
    if args.scratch_checkpoint:
        scratch_ckpt = repo_path(args.scratch_checkpoint)
        scale['depends_on'] = weights_digest(osp.join(ROOT, scratch_ckpt))
    else:
        scratch = train_run(arm_run('shipped', 0, name='scratch_shipped_s0', phase='scratch',
                                    iters=SCRATCH_ITERS,
                                    need_checkpoint=kept_result(scale, args) is None), args)
        scratch_ckpt = scratch['checkpoint']
    scale_run(dict(scale, checkpoint=scratch_ckpt), args)
    if args.stop_after == 'scale':
        return
    cost_run(dict(name='cost', config=PLAIN, seed=0, rounds=15), args)


def current(results: dict) -> dict:
    """The results that belong to the current P: P itself, the runs that started from its
    weights, the from-scratch runs and the cost (a store may keep runs from another P)."""
    digest = (results.get('P') or {}).get('digest')
    return {k: r for k, r in results.items()
            if k in ('P', 'cost') or r.get('depends_on') in (None, digest) or
            r.get('scratch') or r.get('phase') == 'scratch'}


# --------------------------------------------------------------------------- report


def arm_table(results: dict) -> dict:
    """Per arm: mAP summary, per-seed mAP, paired differences, SK use, scale, wall times."""
    ft = {r['arm']: {} for r in results.values() if r.get('phase') == 'finetune'}
    for r in results.values():
        if r.get('phase') == 'finetune':
            ft[r['arm']][r['seed']] = r
    # per arm, seed -> mAP
    maps = {arm: {s: r['metrics']['bbox_mAP'] for s, r in sorted(runs.items())}
            for arm, runs in ft.items()}
    table = {}
    for arm in ARMS:
        runs = ft.get(arm, {})
        mine = maps.get(arm, {})
        entry = dict(mAP=summary(list(mine.values())), seeds=list(mine), per_seed=mine)
        others = ([] if arm == 'plain' else ['plain']) + (
            [] if arm in ('plain', SHIPPED) else [SHIPPED]) + (
            ['backbone'] if arm == 'skconv' else [])  # outside the rule (the docstring)
        for other in others:
            entry[f'vs_{other}'] = paired_difference(mine, maps.get(other, {}))
            entry[f'vs_{other}_verdict'] = paired_verdict(entry[f'vs_{other}'])
        usage = [r.get('usage') for _, r in sorted(runs.items()) if r.get('usage')]
        if usage:
            entry['usage'] = {site: statistics.mean(u[site]['rel_change'] for u in usage)
                              for site in usage[0]}
            gates = [{s: v['gate_abs_mean'] for s, v in u.items() if 'gate_abs_mean' in v}
                     for u in usage]
            entry['gate'] = {site: statistics.mean(g[site] for g in gates)
                             for site in gates[0]} if gates[0] else {}
        entry['wall_s'] = [r['wall_s'] for _, r in sorted(runs.items())]
        entry['s_per_iter'] = [r.get('s_per_iter') for _, r in sorted(runs.items())]
        entry['resumed'] = [bool(r.get('resumed')) for _, r in sorted(runs.items())]
        scale = results.get(f'scale_{arm}')
        if scale:
            entry['scale'] = scale['summary']
        step0 = results.get(f'step0_{arm}')
        if step0:
            entry['step0_mAP'] = step0['metrics']['bbox_mAP']
            entry['step0_metrics'] = step0['metrics']
        table[arm] = entry
    return table


def report(results: dict, args) -> dict:
    table = arm_table(results)
    p = results.get('P')
    cost = (results.get('cost') or {}).get('arms', {})
    decision = choose_default({a: table[a].get('vs_shipped') for a in SK_ARMS if a != SHIPPED},
                              SHIPPED)
    md = ['# SK ablation on the demo set (fine-tuned from P)', '',
          'Produced by `python tools/analysis_tools/sk_ablation.py` (`make ablation`); the '
          "protocol and the rule are in the tool's docstring. mAP: COCO bbox mAP on the 200 "
          f'val images after {FT_ITERS} fine-tuning iterations from P; paired differences are '
          'per seed (the same seeds in every arm), "wins" counts the seeds where the arm is '
          'higher.', '']
    if p:
        md.append(f'P (the plain demo detector, seed 0, {SCRATCH_ITERS} iterations): mAP '
                  f'{p["metrics"]["bbox_mAP"]:.3f}.')
        same = [a for a in SK_ARMS if table[a].get('step0_metrics') == p['metrics']]
        done = [a for a in SK_ARMS if 'step0_metrics' in table[a]]
        if done:
            differ = [a for a in done if a not in same]
            md.append(f'Step 0: P in {len(same)} of {len(done)} SK arms\' configs gives P\'s '
                      f'COCO metrics exactly' + (f' (NOT: {", ".join(differ)})' if differ
                                                 else '') + '.')
        md.append('')
    rows = []
    for arm, (label, _, _) in ARMS.items():
        e = table[arm]
        c = cost.get(arm)
        cost_cell = (f'{c["params"] / 1e6:.2f}M, {c["flops"] / 1e9:.2f}G, '
                     f'x{c["train_step_ratio"]:.2f}' if c else '')
        rows.append([
            label, fmt(e['mAP']),
            '' if arm == 'plain' else _paired_cell(e.get('vs_plain'), e.get('vs_plain_verdict')),
            '' if arm in ('plain', SHIPPED) else _paired_cell(e.get('vs_shipped'),
                                                             e.get('vs_shipped_verdict')),
            f'{statistics.mean(e["usage"].values()):.3f}' if e.get('usage') else '-',
            e['scale']['line'] if e.get('scale') else '-', cost_cell])
    md += md_table(['arm', 'mAP mean ± std (seeds)', 'paired diff. to plain (wins)',
                    'paired diff. to shipped (wins)', 'SK use (mean over sites)',
                    'scale selection (seed 0)', 'params, FLOPs, train step / plain'], rows)
    skconv = table['skconv']
    if skconv.get('vs_backbone'):
        md += ['', 'Outside the rule (the `skconv` arm also drops the neck\'s SK and uses the '
               "paper's Fuse, see the docstring): SKConv against SK in the backbone only, the "
               'arm with SK in the same place: paired difference '
               f'{_paired_cell(skconv["vs_backbone"], skconv["vs_backbone_verdict"])}.']
    scratch = results.get('scale_scratch_shipped')
    if scratch:
        md += ['', f'From scratch (the SK demo, seed 0, {SCRATCH_ITERS} iterations), scale '
               f'selection: {scratch["summary"]["line"]}.']
    if cost:
        c = results['cost']
        md += ['', f'Cost at {c["shape"][0]} x {c["shape"][1]}, batch 1: params, FLOPs '
               "(MMEngine's counter), train step (forward + backward) relative to plain, "
               f'median of {c["rounds"]} interleaved rounds in one process ({c["threads"]} '
               f'threads, load average {c["load_avg"]:.1f} at the end).']
    sites = [a for a in SK_ARMS if table[a].get('usage')]
    if sites:
        names = sorted({s for a in sites for s in table[a]['usage']})
        md += ['', 'SK use per site (mean over seeds; ‖out − x‖ / ‖x‖, SKConv: ‖out − conv(x)‖ '
               '/ ‖conv(x)‖) and the mean |gate|:', '']
        md += md_table(['site'] + [ARMS[a][0] for a in sites], [
            [s] + [f'{table[a]["usage"][s]:.3f} (|s| {table[a]["gate"].get(s, float("nan")):.3f})'
                   if s in table[a]['usage'] else '' for a in sites] for s in names])
    walls = [(a, w, spi, res) for a in ARMS for w, spi, res in
             zip(table[a]['wall_s'], table[a]['s_per_iter'], table[a]['resumed'])]
    if walls:
        md += ['', 'Wall time per fine-tuning run (s, median s/iter): ' + '; '.join(
            f'{a} {w:.0f}{"*" if res else ""} ({spi:.2f})' for a, w, spi, res in walls) +
            ('. \\* resumed: counts the last part only.' if any(r for *_, r in walls) else '.')]
    md += ['', f'Decision (the rule in the docstring): {decision["why"]}.']
    base = osp.join(ROOT, args.report_dir, 'sk_ablation')
    write_text(base + '.md', md)
    write_json(base + '.json', dict(
        table=table, decision=decision, P=p and p['metrics'], cost=results.get('cost'),
        scratch_scale=scratch and scratch['summary'],
        runs={k: {kk: vv for kk, vv in v.items() if kk != 'loss'} for k, v in results.items()}))
    seed_plot(base + '.png', [
        ('mAP per arm', 'COCO bbox mAP (200 val images)',
         [(ARMS[a][0], table[a]['mAP']) for a in ARMS]),
        ('paired difference to plain', 'mAP(arm) - mAP(plain), per seed',
         [(ARMS[a][0], table[a].get('vs_plain')) for a in SK_ARMS]),
    ], f'SK ablation on the demo set: fine-tuned {FT_ITERS} it. from P, mean ± std over '
       'seeds (x: each seed)', zero_line=[False, True])
    print('\n'.join(md))
    print(f'\nwritten: {base}.md, {base}.json, {base}.png')
    return decision


def _paired_cell(diff, verdict) -> str:
    if diff is None:
        return 'not run yet'
    return f'{fmt(diff)}, {diff["wins"]}/{diff["n"]}: {verdict}'


def main():
    args = parse_args()
    if not args.report:
        ablation(args)
    report(current(collect(args.store)), args)


if __name__ == '__main__':
    main()
