"""tools/analysis_tools/sk_lab/runs.py: derived configs, keep-and-skip, resume of cut-off runs,
and paths relative to the repository."""
import json
import os.path as osp

from mmengine.config import Config

from sk_lab import runs

SK = 'configs/demo/faster-rcnn_r18_sk_fpn_shapes.py'
SKCONV = 'configs/demo/faster-rcnn_r18_skconv_fpn_shapes.py'
PLAIN = 'configs/demo/faster-rcnn_r18_fpn_shapes.py'
REPO = runs.ROOT


def test_derived_config(tmp_path):
    edited = []
    run = dict(name='x', seed=2, iters=80, config=SK, gate=False, finetune=True,
               load_from='P.pth', edit=lambda cfg: edited.append(cfg.model.neck.type))
    cfg = Config.fromfile(runs.write_config(run, str(tmp_path)))
    sks = [cfg.model.backbone.plugins[0].cfg, cfg.model.neck.plugin]
    assert all(sk['type'] == 'SKAttention' and sk['gate'] is False for sk in sks)
    assert edited == ['PluginNeck']
    assert cfg.optim_wrapper.optimizer.lr == runs.FT_LR
    assert cfg.param_scheduler[0]['end'] == runs.FT_WARMUP
    assert cfg.param_scheduler[-1]['end'] == 80 and cfg.train_cfg.max_iters == 80
    assert cfg.train_cfg.val_interval == 80
    assert cfg.randomness.seed == 2 and cfg.load_from == 'P.pth'
    # The shared fragment's helper names are gone; the values they carried stay in place.
    assert 'sk_gate_custom_keys' not in cfg and 'sk_checkpoint_hook' not in cfg
    assert runs.gate_keys(cfg) == dict(decay_mult=0.0, lr_mult=10.0)
    plain = Config.fromfile(runs.write_config(dict(name='y', seed=0, iters=500, config=PLAIN),
                                              str(tmp_path)))
    assert plain.optim_wrapper.optimizer.lr == 0.0015 and plain.get('load_from') is None


def test_repo_path_names_files_relative_to_the_repository(tmp_path, monkeypatch):
    assert runs.repo_path(osp.join(REPO, 'work_dirs', 'P', 'iter_500.pth')) == osp.join(
        'work_dirs', 'P', 'iter_500.pth')
    monkeypatch.chdir(tmp_path)  # a relative path is relative to the working directory
    assert osp.normpath(osp.join(REPO, runs.repo_path('p.pth'))) == str(tmp_path / 'p.pth')


def test_sk_options_reach_skconv_and_the_gate_entry(tmp_path):
    cfg = Config.fromfile(osp.join(runs.ROOT, SKCONV))
    assert runs.set_sk_option(cfg, 'fuse_cfg', None) == 1 and cfg.model.backbone.dcn.fuse_cfg is None
    assert runs.set_sk_option(Config.fromfile(osp.join(runs.ROOT, PLAIN)), 'gate', True) == 0
    assert runs.gate_keys(cfg) == dict(decay_mult=0.0, lr_mult=10.0)
    cfg.optim_wrapper.paramwise_cfg.norm_decay_mult = 0.0
    runs.set_gate_keys(cfg, dict(decay_mult=0.0))
    assert runs.gate_keys(cfg) == dict(decay_mult=0.0)
    assert cfg.optim_wrapper.paramwise_cfg.norm_decay_mult == 0.0  # other options kept
    runs.set_gate_keys(cfg, None)
    assert runs.gate_keys(cfg) is None


def test_finished_runs_are_kept_and_skipped(tmp_path, monkeypatch):
    config = osp.join(runs.ROOT, PLAIN)
    monkeypatch.setattr(runs, 'ROOT', str(tmp_path))
    calls = []

    @runs.kept
    def fake(run, args, work_dir, config):
        calls.append(config)
        return dict(runs.stored(run), metrics=dict(bbox_mAP=0.5), wall_s=1.0)

    args = type('Args', (), dict(work_dir='study'))
    run = dict(name='ft_plain_s1', seed=1, iters=10, config=config, edit=lambda cfg: None)
    first = fake(run, args)
    assert 'edit' not in first and first['seed'] == 1
    assert fake(run, args) == first and len(calls) == 1  # the second call reads result.json
    assert calls[0] == str(tmp_path / 'study' / 'ft_plain_s1' / 'config.py')
    assert json.loads((tmp_path / 'study' / 'ft_plain_s1' / 'result.json').read_text()) == first
    assert runs.collect('study') == {'ft_plain_s1': first}
    assert not (tmp_path / 'study' / 'ft_plain_s1' / 'result.json.tmp').exists()


def _cut_off_run(tmp_path, monkeypatch, marker, final_val=True):
    """A run folder with ``last_checkpoint`` and no result, left by ``marker``'s run (None:
    no marker); train.py "resumes" to iteration 120 (its final validation logged only with
    ``final_val``), test.py logs its metrics. The commands run and the result."""
    monkeypatch.setattr(runs, 'ROOT', str(tmp_path))
    work_dir = tmp_path / 'exp' / 'ft_plain_s0'
    work_dir.mkdir(parents=True)
    (work_dir / 'last_checkpoint').write_text(str(work_dir / 'iter_100.pth'))
    if marker is not None:
        (work_dir / 'run.json').write_text(json.dumps(marker))
    first = work_dir / '20260101_000000' / 'vis_data'  # the part before the cut-off
    first.mkdir(parents=True)
    (first / 'scalars.json').write_text('\n'.join(
        json.dumps(dict(iter=i, loss=9.0, time=4.0)) for i in (90, 100, 110)))
    (tmp_path / 'configs').mkdir()
    with open(osp.join(REPO, PLAIN)) as f:  # its _base_ is an mmdet:: config
        (tmp_path / 'configs' / 'c.py').write_text(f.read())
    commands = []

    def fake_sh(cmd, log):
        commands.append(cmd)
        metrics = {f'coco/{m}': 0.4 for m in runs.METRICS}
        if 'tools/test.py' in cmd:
            stamp = work_dir / '20260101_000002'
            stamp.mkdir()
            (stamp / '20260101_000002.json').write_text(json.dumps(metrics))
            return
        vis = work_dir / '20260101_000001' / 'vis_data'
        vis.mkdir(parents=True)
        records = [dict(iter=i, loss=1.0 / i, time=2.0) for i in (110, 120)]
        (vis / 'scalars.json').write_text('\n'.join(
            json.dumps(r) for r in records + ([dict(metrics, step=120)] if final_val else [])))
        (work_dir / 'last_checkpoint').write_text(str(work_dir / 'iter_120.pth'))

    monkeypatch.setattr(runs, 'sh', fake_sh)
    args = type('Args', (), dict(work_dir='exp', data_root='data/x', usage_images=0))
    result = runs.train_run(dict(name='ft_plain_s0', seed=0, iters=120, config='configs/c.py',
                                 depends_on='P1'), args)
    return commands, result


def test_a_cut_off_training_resumes(tmp_path, monkeypatch):
    """The folder is the run's own: train.py gets ``--resume``; the losses of both parts
    count, an iteration run twice with its last record."""
    commands, result = _cut_off_run(tmp_path, monkeypatch,
                                    dict(depends_on='P1', config='configs/c.py'))
    assert len(commands) == 1 and '--resume' in commands[0] and result['resumed']
    assert result['metrics']['bbox_mAP'] == 0.4 and result['val_curve'] == [(120, 0.4)]
    assert [it for it, _ in result['loss']] == [90, 100, 110, 120]
    assert dict(result['loss'])[110] == 1.0 / 110
    assert result['s_per_iter'] == 3.0  # median of 4, 4 (first part), 2, 2
    assert result['checkpoint'] == osp.join('exp', 'ft_plain_s0', 'iter_120.pth')
    assert 'usage' not in result


def test_a_run_cut_off_in_its_final_validation_tests_its_last_checkpoint(tmp_path,
                                                                         monkeypatch):
    commands, result = _cut_off_run(tmp_path, monkeypatch,
                                    dict(depends_on='P1', config='configs/c.py'),
                                    final_val=False)
    assert 'tools/train.py' in commands[0] and 'tools/test.py' in commands[1]
    assert osp.basename(commands[1][commands[1].index('tools/test.py') + 2]) == 'iter_120.pth'
    assert result['metrics']['bbox_mAP'] == 0.4 and result['val_curve'] == []


def test_a_folder_left_by_another_run_is_not_resumed(tmp_path, monkeypatch):
    """Started from other weights, or from before folders were marked: trained afresh (a
    resume would continue that run and ignore ``load_from``)."""
    for marker in (dict(depends_on='P0', config='configs/c.py'), None):
        commands, result = _cut_off_run(tmp_path / str(marker is None), monkeypatch, marker)
        assert '--resume' not in commands[0] and not result['resumed']
        assert [it for it, _ in result['loss']] == [110, 120]  # the old part is gone
        work_dir = tmp_path / str(marker is None) / 'exp' / 'ft_plain_s0'
        assert json.loads((work_dir / 'run.json').read_text()) == dict(
            depends_on='P1', config='configs/c.py')


def test_store_keeps_results_across_sessions_for_the_same_weights(tmp_path, monkeypatch):
    monkeypatch.setattr(runs, 'ROOT', str(tmp_path))
    (tmp_path / 'configs').mkdir()
    with open(osp.join(REPO, PLAIN)) as f:
        (tmp_path / 'configs' / 'c.py').write_text(f.read())
    calls = []

    @runs.kept
    def fake(run, args, work_dir, config):
        calls.append(run['name'])
        (tmp_path / 'w.pth').write_text('x')
        return dict(runs.stored(run), checkpoint='w.pth', n=len(calls))

    args = type('Args', (), dict(work_dir='exp', store='docs/runs'))
    run = dict(name='ft_a_s0', seed=0, config='configs/c.py', depends_on='P1')
    first = fake(run, args)
    assert json.loads((tmp_path / 'docs' / 'runs' / 'ft_a_s0.json').read_text()) == first
    # a new session: the work dir is gone, the store (committed) is not
    import shutil
    shutil.rmtree(tmp_path / 'exp')
    assert fake(run, args) == first and calls == ['ft_a_s0']
    assert runs.collect('docs/runs') == {'ft_a_s0': first}
    # other starting weights: run again, and the store keeps the new result
    assert fake(dict(run, depends_on='P2'), args)['n'] == 2
    assert runs.kept_result(run, args) is None
    # a result whose checkpoint is needed but gone: run again
    (tmp_path / 'w.pth').unlink()
    assert runs.kept_result(dict(run, depends_on='P2'), args) is not None
    assert runs.kept_result(dict(run, depends_on='P2', need_checkpoint=True), args) is None
    assert fake(dict(run, depends_on='P2', need_checkpoint=True), args)['n'] == 3


def test_weights_digest_is_of_the_weights_not_the_file(tmp_path):
    import torch
    state = {'a.weight': torch.arange(6.).reshape(2, 3), 'b.bias': torch.ones(2)}
    torch.save(dict(state_dict=state, meta=dict(time='1')), tmp_path / 'one.pth')
    torch.save(dict(state_dict=dict(reversed(list(state.items()))), meta=dict(time='2')),
               tmp_path / 'two.pth')
    state['b.bias'] = torch.tensor([1., 1.0001])
    torch.save(dict(state_dict=state), tmp_path / 'three.pth')
    one, two, three = (runs.weights_digest(str(tmp_path / f'{n}.pth'))
                       for n in ('one', 'two', 'three'))
    assert one == two != three and len(one) == 64
