"""tools/analysis_tools/sk_ablation.py: the arms' configs, the paired plan, the order of the
phases, the rule's decision and the report, on made-up results (the ablation itself is hours
of training: a tool, not a test)."""
import json
import os.path as osp

import pytest
from mmengine.config import Config

import sk_ablation
from sk_lab.runs import gate_keys, write_config


def arm_config(arm, tmp_path):
    return Config.fromfile(write_config(sk_ablation.arm_run(arm, 1), str(tmp_path)))


def test_arms_differ_from_shipped_by_their_one_change(tmp_path):
    shipped = arm_config('shipped', tmp_path)
    assert shipped.model.neck.type == 'PluginNeck' and shipped.model.backbone.plugins
    assert shipped.model.neck.plugin.gate is True and shipped.model.neck.plugin.get(
        'fuse_cfg') is None
    assert gate_keys(shipped) == dict(decay_mult=0.0, lr_mult=10.0)

    backbone = arm_config('backbone', tmp_path)
    assert backbone.model.neck.type == 'FPN' and backbone.model.neck.out_channels == 128
    assert backbone.model.backbone.plugins == shipped.model.backbone.plugins
    neck = arm_config('neck', tmp_path)
    assert neck.model.backbone.plugins is None and neck.model.neck == shipped.model.neck
    paper = arm_config('paper_fuse', tmp_path)
    assert paper.model.neck.plugin.fuse_cfg == {}
    assert paper.model.backbone.plugins[0].cfg.fuse_cfg == {}
    lr1x = arm_config('gate_lr1x', tmp_path)
    assert gate_keys(lr1x) == dict(decay_mult=0.0) and lr1x.model == shipped.model
    skconv = arm_config('skconv', tmp_path)
    assert skconv.model.backbone.dcn.type == 'SKConv' and skconv.model.backbone.dcn.gate
    plain = arm_config('plain', tmp_path)
    assert plain.model.neck.type == 'FPN' and not plain.model.backbone.get('plugins')
    for cfg in (shipped, backbone, neck, paper, lr1x, skconv, plain):
        assert cfg.randomness.seed == 1


def test_plan_pairs_every_arm_with_the_same_seeds_seed_major():
    runs = sk_ablation.plan('P.pth')
    assert len(runs) == len(sk_ablation.ARMS) * len(sk_ablation.SEEDS)
    assert len({r['name'] for r in runs}) == len(runs)
    for arm in sk_ablation.ARMS:
        assert [r['seed'] for r in runs if r['arm'] == arm] == list(sk_ablation.SEEDS)
    assert [r['seed'] for r in runs] == sorted(r['seed'] for r in runs)  # seed-major
    assert all(r['load_from'] == 'P.pth' and r['finetune'] and r['iters'] == 200 for r in runs)


def test_phases_run_in_order_and_use_given_checkpoints(monkeypatch, tmp_path):
    calls = []

    seen = {}

    def fake(kind):
        def run(r, args):
            calls.append((kind, r['name']))
            seen[r['name']] = r
            return dict(r, checkpoint=f'{r["name"]}.pth', load_from=r.get('load_from'),
                        metrics=dict(bbox_mAP=0.4))
        return run

    for kind in ('train_run', 'test_run', 'scale_run', 'cost_run'):
        monkeypatch.setattr(sk_ablation, kind, fake(kind))
    monkeypatch.setattr(sk_ablation, 'weights_digest', lambda path: f'sha:{osp.basename(path)}')
    monkeypatch.setattr('mmdet_sk.datasets.ensure_demo_data', lambda root: None)
    where = ['--work-dir', str(tmp_path / 'w'), '--store', str(tmp_path / 'store')]
    args = sk_ablation.parse_args(['--p-checkpoint', str(tmp_path / 'p.pth'),
                                   '--scratch-checkpoint', str(tmp_path / 's.pth')] + where)
    sk_ablation.ablation(args)
    assert calls[0] == ('test_run', 'P')  # P given: evaluated, not trained
    step0 = [n for k, n in calls if n.startswith('step0_')]
    assert step0 == [f'step0_{a}' for a in sk_ablation.SK_ARMS]
    trained = [n for k, n in calls if k == 'train_run']
    assert trained == [r['name'] for r in sk_ablation.plan('x')]  # no scratch run: given
    scales = [n for k, n in calls if k == 'scale_run']
    assert scales == [f'scale_{a}' for a in sk_ablation.SK_ARMS] + ['scale_scratch_shipped']
    # each seed-0 scale analysis right after its run
    assert calls.index(('scale_run', 'scale_neck')) == calls.index(('train_run',
                                                                    'ft_neck_s0')) + 1
    assert calls[-1] == ('cost_run', 'cost')
    # P's digest is kept with P's result; the checkpoints are named relative to the repository
    p = json.loads((tmp_path / 'store' / 'P.json').read_text())
    assert p['digest'] == 'sha:p.pth'
    for path, given in ((p['load_from'], 'p.pth'), (seen['ft_neck_s1']['load_from'], 'p.pth'),
                        (seen['scale_scratch_shipped']['checkpoint'], 's.pth')):
        assert not osp.isabs(path)
        assert osp.normpath(osp.join(sk_ablation.ROOT, path)) == str(tmp_path / given)
    assert seen['scale_neck']['checkpoint'] == 'ft_neck_s0.pth'  # as its run named it

    calls.clear()
    sk_ablation.ablation(sk_ablation.parse_args(['--stop-after', 'step0'] + where))
    assert calls[0] == ('train_run', 'P') and calls[-1] == ('test_run', 'step0_gate_lr1x')


def test_runs_from_another_p_are_left_out_of_the_report():
    results = dict(P=dict(digest='A'), ft_plain_s0=dict(depends_on='A'),
                   ft_plain_s1=dict(depends_on='B'), scale_scratch_shipped=dict(
                       depends_on='S', scratch=True), cost=dict(arms={}))
    assert set(sk_ablation.current(results)) == {'P', 'ft_plain_s0', 'scale_scratch_shipped',
                                                 'cost'}


def _results(diffs):
    """Made-up finished runs: plain at 0.50 + seed / 100, each arm at plain + its diffs."""
    results = dict(P=dict(name='P', arm='P', metrics=dict(bbox_mAP=0.3, bbox_mAP_50=0.5)))
    for arm in sk_ablation.ARMS:
        for seed in sk_ablation.SEEDS:
            value = 0.5 + seed / 100 + (diffs.get(arm, (0, 0, 0))[seed])
            results[f'ft_{arm}_s{seed}'] = dict(
                name=f'ft_{arm}_s{seed}', arm=arm, seed=seed, phase='finetune',
                metrics=dict(bbox_mAP=value), wall_s=500.0, s_per_iter=2.5,
                resumed=(arm, seed) == ('neck', 2),
                usage=None if arm == 'plain' else {
                    'backbone.layer2': dict(rel_change=0.05, gate_abs_mean=0.04)})
        if arm != 'plain':
            results[f'step0_{arm}'] = dict(name=f'step0_{arm}', arm=arm, phase='step0',
                                           metrics=dict(results['P']['metrics']))
            results[f'scale_{arm}'] = dict(summary=dict(line=f'{arm}: 1 of 3 sites rise'))
    return results


def test_report_and_decision(tmp_path, monkeypatch):
    monkeypatch.setattr(sk_ablation, 'ROOT', str(tmp_path))
    args = sk_ablation.parse_args(['--report-dir', 'out'])
    diffs = dict(shipped=(-0.01, -0.012, -0.011), gate_lr1x=(0.004, 0.006, 0.005),
                 neck=(0.02, -0.01, 0.03), paper_fuse=(-0.011, -0.009, -0.010),
                 skconv=(-0.02, -0.018, -0.022))
    decision = sk_ablation.report(_results(diffs), args)
    # gate_lr1x vs shipped: +0.016 in every seed -> higher -> the new default
    assert decision['arm'] == 'gate_lr1x' and decision['decided']
    md = (tmp_path / 'out' / 'sk_ablation.md').read_text()
    assert 'Step 0: P in 6 of 6 SK arms\' configs gives P\'s COCO metrics exactly.' in md
    assert '-0.011 ± 0.001 (-0.010, -0.012, -0.011), 0/3: lower' in md
    assert 'gate lr 1x | 0.515 ± 0.011 (0.504, 0.516, 0.525) | +0.005 ± 0.001' in md
    assert '+0.016 ± 0.002 (+0.014, +0.018, +0.016), 3/3: higher' in md
    assert 'neck 500* (2.50)' in md
    # outside the rule: SKConv against SK in the same place (backbone at plain's values)
    assert ('SKConv against SK in the backbone only, the arm with SK in the same place: '
            'paired difference -0.020 ± 0.002 (-0.020, -0.018, -0.022), 0/3: lower') in md
    assert 'Decision (the rule in the docstring): gate_lr1x beats shipped by +0.016' in md
    data = json.loads((tmp_path / 'out' / 'sk_ablation.json').read_text())
    assert data['table']['neck']['vs_plain_verdict'] == 'no difference'
    assert data['table']['shipped']['vs_plain']['values'] == pytest.approx([-0.01, -0.012,
                                                                            -0.011])
    assert (tmp_path / 'out' / 'sk_ablation.png').stat().st_size > 1000

    partial = {k: v for k, v in _results(diffs).items() if not k.endswith('_s2')}
    decision = sk_ablation.report(partial, args)
    assert decision['arm'] is None and 'not all seeds have run yet' in decision['why']
    assert 'not all seeds yet' in (tmp_path / 'out' / 'sk_ablation.md').read_text()


def test_cost_counts_and_times_every_arm_against_plain(monkeypatch, tmp_path):
    arms = {a: sk_ablation.ARMS[a] for a in ('plain', 'neck', 'skconv')}
    monkeypatch.setattr(sk_ablation, 'ARMS', arms)
    from mmengine.logging import MMLogger
    level = MMLogger.get_current_instance().level
    args = sk_ablation.parse_args(['--work-dir', str(tmp_path / 'w'),
                                   '--store', str(tmp_path / 'store')])
    cost = sk_ablation.cost_run(dict(name='cost', config=sk_ablation.PLAIN, seed=0, rounds=1),
                                args)
    out = cost['arms']
    assert set(out) == set(arms) and cost['shape'] == sk_ablation.DEMO_SHAPE
    for arm in arms:
        assert out[arm]['train_step_ratio'] == pytest.approx(
            out[arm]['train_step_ms'] / out['plain']['train_step_ms'], abs=2e-3)
    for arm in ('neck', 'skconv'):  # SK adds parameters and work to the plain detector
        assert out[arm]['params'] > out['plain']['params']
        assert out[arm]['flops'] > out['plain']['flops']
        assert out[arm]['train_step_ms'] > 0
    assert MMLogger.get_current_instance().level == level  # the logger is as it was
    # kept: the second call reads the stored result instead of measuring again
    stored = json.loads((tmp_path / 'store' / 'cost.json').read_text())
    assert stored['arms'] == out
    monkeypatch.setattr('sk_lab.cost.write_config', None)  # would fail if it ran again
    assert sk_ablation.cost_run(dict(name='cost', config=sk_ablation.PLAIN, seed=0,
                                     rounds=1), args)['arms'] == out
