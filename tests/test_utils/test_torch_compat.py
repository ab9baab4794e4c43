"""The guards that let the package import and run on torch 2.1 as on today's torch."""
import importlib

import pytest
import torch

from mmdet_sk.utils import checkpoint as sk_checkpoint
from mmdet_sk.utils import torch_compat


def test_no_allow_list_where_torch_lacks_it(monkeypatch):
    """torch < 2.4 has no add_safe_globals: importing mmdet_sk must not touch it."""
    monkeypatch.delattr(torch.serialization, 'add_safe_globals', raising=False)
    assert not torch_compat.torch_load_is_weights_only()
    assert sk_checkpoint.allow_mmengine_checkpoints() is False


def test_no_allow_list_before_the_safe_default(monkeypatch):
    """torch 2.4/2.5 have the API but load fully by default (and take no (fn, name) pairs)."""
    calls = []
    monkeypatch.setattr(torch.serialization, 'add_safe_globals', calls.append, raising=False)
    monkeypatch.setattr(torch_compat, 'TORCH_VERSION', torch_compat.digit_version('2.5.1'))
    assert sk_checkpoint.allow_mmengine_checkpoints() is False
    assert calls == []


def test_allow_list_where_torch_load_is_safe_by_default(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.serialization, 'add_safe_globals', calls.append, raising=False)
    monkeypatch.setattr(torch_compat, 'TORCH_VERSION', torch_compat.digit_version('2.6.0'))
    assert sk_checkpoint.allow_mmengine_checkpoints() is True
    assert len(calls) == 1 and sk_checkpoint.HistoryBuffer in calls[0]


def test_package_imports_without_the_allow_list_api(monkeypatch):
    monkeypatch.delattr(torch.serialization, 'add_safe_globals', raising=False)
    import mmdet_sk
    importlib.reload(mmdet_sk)  # the import-time call of allow_mmengine_checkpoints


@pytest.mark.parametrize('old_torch', [False, True])
def test_cpu_autocast_query(monkeypatch, old_torch):
    real = torch.is_autocast_enabled

    def no_device_arg(*args):  # torch < 2.4: is_autocast_enabled() takes no device
        if args:
            raise TypeError('is_autocast_enabled() takes 0 positional arguments')
        return real()

    def query():  # patched only around the query: torch.autocast itself asks with a device
        with monkeypatch.context() as m:
            if old_torch:
                m.setattr(torch, 'is_autocast_enabled', no_device_arg)
            return torch_compat.is_cpu_autocast_enabled()

    assert query() is False
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert query() is True
    assert query() is False
