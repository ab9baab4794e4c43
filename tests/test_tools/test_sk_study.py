"""tools/analysis_tools/sk_study.py: the pilot's configs and rule, the verdicts and the report,
on made-up results (the study itself is hours of training: a tool, not a test). The shared run
machinery (derived configs, keep-and-skip, resume) is tested in tests/test_tools/test_sk_lab."""
import json
import os.path as osp

import pytest
from mmengine.config import Config

import sk_study
from sk_lab.runs import write_config


def test_pilot_configs(tmp_path):
    run = dict(name='x', seed=2, iters=80, config=sk_study.SK, gate=True, pilot='b',
               edit=sk_study.pilot_edit('b'), finetune=True, load_from='P.pth')
    cfg = Config.fromfile(write_config(run, str(tmp_path)))
    assert cfg.optim_wrapper.paramwise_cfg.custom_keys['.gate'] == dict(decay_mult=0.0)
    cfg = Config.fromfile(write_config(dict(run, edit=sk_study.pilot_edit('a')), str(tmp_path)))
    assert '.gate' not in cfg.optim_wrapper.paramwise_cfg.custom_keys
    assert sk_study.gate_keys(Config.fromfile(sk_study.SK)) in sk_study.PILOT_OPTIONS.values()


def _result(loss, usage, mAP=0.5):
    return dict(loss=[(70, loss), (80, loss)], metrics=dict(bbox_mAP=mAP),
                usage={'neck.level1': dict(rel_change=usage)})


def test_pilot_rule_takes_most_sk_use_within_the_loss_limit():
    pilots = dict(a=_result(1.0, 0.01), b=_result(1.04, 0.05), c=_result(1.2, 0.3))
    assert sk_study.choose_pilot(pilots) == 'b'  # c moves most but its loss is 20% higher
    pilots['c'] = _result(0.9, 0.3)
    assert sk_study.choose_pilot(pilots) == 'c'


def test_verdicts_compare_against_the_seed_spread():
    table = dict(ft_safesk=sk_study.summary([0.52, 0.53, 0.54]),
                 ft_plain=sk_study.summary([0.50, 0.51, 0.49]),
                 ft_ungated=sk_study.summary([0.50, 0.53, 0.47]),
                 scratch_sk=sk_study.summary([0.3]))
    lines = sk_study.verdicts(table)
    assert lines[0].startswith('Fine-tuned, gated SK vs plain: 0.530 vs 0.500')
    assert lines[0].endswith('higher by more than the seed spread')
    assert lines[1].endswith('no difference beyond the seed spread')
    assert lines[3].endswith('not all seeds have run yet')


def test_report_from_results(tmp_path, monkeypatch):
    monkeypatch.setattr(sk_study, 'ROOT', str(tmp_path))
    results = {}
    for arm, base in (('ft_plain', 0.50), ('ft_safesk', 0.52), ('step0_plain', 0.45),
                      ('step0_safesk', 0.45)):
        for seed in ((0, 1, 2) if arm.startswith('ft') else (0, )):
            results[f'{arm}_s{seed}'] = dict(
                arm=arm, seed=seed, wall_s=100.0, s_per_iter=2.5,
                metrics=dict(bbox_mAP=base + seed / 100),
                usage={'neck.level1': dict(rel_change=0.1)} if 'sk' in arm else None,
                resumed=(arm, seed) == ('ft_safesk', 1))
    args = type('Args', (), dict(report_dir='out', usage_images=5))
    sk_study.report(results, args)
    md = (tmp_path / 'out' / 'sk_study.md').read_text()
    assert 'Step 0: gated SK inserted into P gives the same COCO metrics as P' in md
    assert '0.530 ± 0.010 (0.520, 0.530, 0.540)' in md
    assert 'from scratch 500 it., gated SK | not run yet' in md
    assert '| 100, 100*, 100 |' in md and 'counts the resumed part only' in md
    assert '100*' not in md.split('fine-tuned 200 it., plain')[1].split('\n')[0]
    data = json.loads((tmp_path / 'out' / 'sk_study.json').read_text())
    assert data['table']['ft_plain']['values'] == pytest.approx([0.5, 0.51, 0.52])
    assert (tmp_path / 'out' / 'sk_study.png').stat().st_size > 1000
