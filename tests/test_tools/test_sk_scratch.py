"""tools/analysis_tools/sk_scratch.py: the arms' configs, the paired plan with shared initial
weights, one arm trained through the lab on the tiny set, and the rule's choice of the demo on
made-up results (the experiment itself is hours of training: a tool, not a test)."""
import json
import os.path as osp

import pytest
import torch
from mmengine.config import Config

import sk_scratch
from sk_lab.runs import ROOT, initial_weights, weights_digest, write_config


def arm_config(arm, tmp_path, seed=1):
    return Config.fromfile(write_config(sk_scratch.arm_run(arm, seed), str(tmp_path)))


def sk_nodes(cfg):
    from mmdet_sk.utils.preflight import find_config_nodes
    return [n for _, n in find_config_nodes(cfg.model, 'type')
            if n['type'] in ('SKAttention', 'SKConv')]


def test_arms_are_their_family_plain_plus_sk(tmp_path):
    plain = arm_config('yolox_plain', tmp_path)
    sk = arm_config('yolox_sk', tmp_path)
    ungated = arm_config('yolox_sk_ungated', tmp_path)
    assert plain.model.backbone.type == 'CSPDarknet' and not sk_nodes(plain)
    assert sk.model.backbone.type == 'PluginCSPDarknet' and sk.model.neck.type == 'PluginNeck'
    assert sk.model.neck.neck == plain.model.neck  # SK on the plain PAFPN's outputs
    assert [n['gate'] for n in sk_nodes(sk)] == [True, True]
    assert [n['gate'] for n in sk_nodes(ungated)] == [False, False]
    for cfg in (plain, sk, ungated):  # the schedule and data of the plain arm, validated often
        assert cfg.train_cfg.max_epochs == plain.train_cfg.max_epochs == 10
        assert cfg.train_cfg.val_interval == sk_scratch.YOLOX_VAL_INTERVAL
        assert cfg.train_dataloader == plain.train_dataloader and cfg.randomness.seed == 1

    frcnn = arm_config('frcnn_plain', tmp_path)
    sknet = arm_config('frcnn_sknet18', tmp_path)
    shipped = arm_config('frcnn_sk', tmp_path)
    assert frcnn.model.backbone.type == 'PluginResNet' and not sk_nodes(frcnn)
    assert sknet.model.backbone.type == 'SKNet' and sknet.model.backbone.depth == 18
    assert sknet.model.backbone.init_cfg is None  # from scratch
    assert sknet.model.neck == frcnn.model.neck and sknet.model.roi_head == frcnn.model.roi_head
    assert shipped.model.neck.type == 'PluginNeck' and shipped.model.backbone.plugins
    for cfg in (frcnn, sknet, shipped):
        assert cfg.train_cfg.max_iters == 500 and cfg.optim_wrapper.optimizer.type == 'AdamW'


def test_plan_pairs_every_arm_family_by_family_seed_major(tmp_path):
    args = sk_scratch.parse_args(['--work-dir', 'w'])
    runs = sk_scratch.plan(['yolox', 'frcnn'], args, {'w/init_yolox_s0.pth': 'abc'})
    assert len(runs) == len(sk_scratch.ARMS) * len(sk_scratch.SEEDS)
    assert len({r['name'] for r in runs}) == len(runs)
    assert [r['family'] for r in runs] == ['yolox'] * 9 + ['frcnn'] * 9
    for arm in sk_scratch.ARMS:
        assert [r['seed'] for r in runs if r['arm'] == arm] == list(sk_scratch.SEEDS)
    for run in runs:  # every arm of a family and seed loads the same initial weights
        assert run['load_from'] == f'w/init_{run["family"]}_s{run["seed"]}.pth'
    assert runs[0]['depends_on'] == 'abc' and runs[1]['depends_on'] == 'abc'
    assert sk_scratch.plan(['frcnn'], args)[0]['arm'] == 'frcnn_plain'


def test_initial_weights_are_the_plain_detector_under_the_seed(tmp_path):
    from mmdet.registry import MODELS
    from mmengine.runner import set_random_seed
    path = str(tmp_path / 'init.pth')
    digest = initial_weights(sk_scratch.YOLOX, 1, path)
    assert digest == weights_digest(path)
    assert initial_weights(sk_scratch.YOLOX, 1, path) == digest  # kept, not written again
    assert initial_weights(sk_scratch.YOLOX, 1, str(tmp_path / 'again.pth')) == digest
    assert initial_weights(sk_scratch.YOLOX, 2, str(tmp_path / 'other.pth')) != digest
    state = torch.load(path, map_location='cpu')['state_dict']
    cfg = Config.fromfile(sk_scratch.YOLOX_SK)
    set_random_seed(1)
    sk = MODELS.build(cfg.model)
    sk.init_weights()
    own = sk.state_dict()
    shared = [k for k in state if k in own]
    # the SK detector has every plain weight under the same name (what it loads), and more
    assert len(shared) == len(state) and len(own) > len(state)


@pytest.fixture
def tiny_yolox(tmp_path, monkeypatch):
    """The YOLOX family on 16 images, batch 8, one epoch: two iterations."""
    configs = {}
    for arm in ('yolox_plain', 'yolox_sk'):
        path = tmp_path / f'{arm}.py'
        path.write_text(f'_base_ = {osp.join(ROOT, sk_scratch.ARMS[arm][2])!r}\n'
                        'train_cfg = dict(max_epochs=1)\n'
                        # untrained, it scores below YOLOX's threshold: keep every box
                        'model = dict(test_cfg=dict(score_thr=0.0))\n'
                        'train_dataloader = dict(num_workers=0, persistent_workers=False)\n'
                        'val_dataloader = dict(num_workers=0, persistent_workers=False)\n')
        configs[arm] = str(path)
    arms = {a: (f, label, configs[a], gate) for a, (f, label, _, gate) in
            sk_scratch.ARMS.items() if a in configs}
    monkeypatch.setattr(sk_scratch, 'ARMS', arms)
    return configs


def test_arms_start_from_the_shared_initial_weights(tiny_yolox, tiny_coco, tmp_path):
    args = sk_scratch.parse_args(['--work-dir', str(tmp_path / 'w'), '--store',
                                  str(tmp_path / 'store'), '--data-root', str(tiny_coco)])
    init = str(tmp_path / 'w' / 'init_yolox_s0.pth')
    digest = initial_weights(tiny_yolox['yolox_plain'], 0, init)
    run = sk_scratch.arm_run('yolox_sk', 0, load_from=init, depends_on=digest)
    result = sk_scratch.train_run(run, args)
    log = (tmp_path / 'w' / 'yolox_sk_s0' / 'run.log').read_text()
    assert 'new in 6 SK blocks keep their initialisation (gate=True' in log
    assert 'other tensors are missing' not in log
    assert result['val_curve'] and result['val_curve'][-1][1] == result['metrics']['bbox_mAP']
    assert result['depends_on'] == digest and result['load_from'] == init
    stored = json.loads((tmp_path / 'store' / 'yolox_sk_s0.json').read_text())
    assert stored['metrics'] == result['metrics']


def _results(diffs, seeds=(0, 1, 2)):
    """Made-up results: plain arms at 0.4 + seed / 100, every other arm ``diffs[arm][i]``
    above its plain arm."""
    results = {}
    for arm, (family, *_) in sk_scratch.ARMS.items():
        for i, seed in enumerate(seeds):
            base = 0.4 + seed / 100
            results[f'{arm}_s{seed}'] = dict(
                arm=arm, family=family, seed=seed, s_per_iter=1.0, wall_s=10.0,
                metrics=dict(bbox_mAP=base + diffs.get(arm, [0.0] * 3)[i]))
    return results


def test_demo_follows_the_arm_that_beats_its_plain_arm(tmp_path):
    args = sk_scratch.parse_args(['--report-dir', str(tmp_path)])
    diffs = dict(yolox_sk=[0.03, 0.031, 0.029], frcnn_sk=[0.01, -0.02, 0.05],
                 frcnn_sknet18=[0.05, -0.04, 0.06], yolox_sk_ungated=[0.0, 0.01, 0.02])
    demo = sk_scratch.report(_results(diffs), args)
    assert demo['decided'] and demo['beats_plain'] and demo['arm'] == 'yolox_sk'
    assert demo['config'] == sk_scratch.YOLOX_SK and demo['plain_config'] == sk_scratch.YOLOX
    written = json.loads((tmp_path / 'sk_scratch.json').read_text())
    assert written['demo'] == demo
    table = written['table']
    assert table['yolox_sk']['vs_plain_verdict'] == 'higher'
    assert table['frcnn_sknet18']['vs_plain_verdict'] == 'no difference'
    assert table['yolox_sk_ungated']['vs_gated']['values'] == pytest.approx([-0.03, -0.021,
                                                                              -0.009])
    md = (tmp_path / 'sk_scratch.md').read_text()
    assert 'yolox_sk beats its plain arm by +0.030' in md


def test_demo_without_a_winner_is_the_closest_and_says_so(tmp_path):
    args = sk_scratch.parse_args(['--report-dir', str(tmp_path)])
    diffs = dict(yolox_sk=[-0.03, -0.031, -0.029], frcnn_sk=[0.01, -0.02, 0.02],
                 frcnn_sknet18=[0.0, 0.0, 0.0])
    demo = sk_scratch.report(_results(diffs), args)
    assert demo['decided'] and not demo['beats_plain'] and demo['arm'] == 'frcnn_sk'
    assert 'no SK arm beats its plain arm' in demo['why']
    partial = {k: v for k, v in _results(diffs).items() if not k.endswith('_s2')}
    demo = sk_scratch.report(partial, args)
    assert not demo['decided'] and demo['arm'] == sk_scratch.UNDECIDED_DEMO
    assert 'not all seeds yet' in (tmp_path / 'sk_scratch.md').read_text()


def test_the_yolox_pilot_decides_whether_the_family_runs(monkeypatch, tmp_path):
    trained = []

    def fake_train(run, args):
        trained.append(run['name'])
        return dict(metrics=dict(bbox_mAP=pilot_map if run.get('phase') == 'pilot' else 0.3))

    monkeypatch.setattr(sk_scratch, 'train_run', fake_train)
    monkeypatch.setattr(sk_scratch, 'initial_weights', lambda config, seed, path: 'digest')
    monkeypatch.setattr('mmdet_sk.datasets.ensure_demo_data', lambda root: root)
    args = sk_scratch.parse_args(['--work-dir', str(tmp_path), '--no-cost'])
    pilot_map = 0.05
    sk_scratch.scratch(args)
    assert trained[0] == 'pilot_yolox_plain_s100' and trained[1] == 'frcnn_plain_s0'
    assert not any(n.startswith('yolox_') for n in trained)
    trained.clear()
    pilot_map = 0.3
    sk_scratch.scratch(args)
    assert trained[:2] == ['pilot_yolox_plain_s100', 'yolox_plain_s0'] and len(trained) == 19
    # --arms trains those arms only (another process may train the others)
    trained.clear()
    sk_scratch.scratch(sk_scratch.parse_args(['--work-dir', str(tmp_path), '--no-cost',
                                              '--families', 'frcnn', '--arms', 'frcnn_sk']))
    assert trained == ['frcnn_sk_s0', 'frcnn_sk_s1', 'frcnn_sk_s2']


def test_the_pilot_is_not_a_seed_of_the_plain_arm(tmp_path):
    args = sk_scratch.parse_args(['--report-dir', str(tmp_path)])
    results = _results({})
    results['pilot_yolox_plain_s100'] = dict(
        arm='yolox_plain', family='yolox', seed=100, phase='pilot', val_curve=[(2, 0.1),
                                                                              (10, 0.25)],
        metrics=dict(bbox_mAP=0.25))
    sk_scratch.report(results, args)
    table = json.loads((tmp_path / 'sk_scratch.json').read_text())['table']
    assert table['yolox_plain']['mAP']['n'] == 3 and '100' not in table['yolox_plain']['per_seed']
    assert 'YOLOX pilot (the plain arm, seed 100' in (tmp_path / 'sk_scratch.md').read_text()
