"""MMEngine checkpoints load with torch's safe loader; nothing else gets through."""
import io

import pytest
import torch
from mmengine.logging.history_buffer import HistoryBuffer
from mmengine.logging import MessageHub

from sk_test_utils import requires_torch

# torch.load is the safe loader by default from torch 2.6; before, it unpickles anything.
pytestmark = requires_torch('2.6', 'torch.load defaults to weights_only=True')


def saved(obj) -> io.BytesIO:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return buffer


def test_message_hub_state_loads_safely():
    """A HistoryBuffer pickles its statistics methods as getattr(HistoryBuffer, name)."""
    hub = MessageHub.get_instance('test_checkpoint_loading')
    hub.update_scalar('train/loss', 1.5)
    hub.update_info('iter', 3)
    state = torch.load(saved(dict(message_hub=hub.state_dict())))  # weights_only=True
    buffer = state['message_hub']['log_scalars']['train/loss']
    assert isinstance(buffer, HistoryBuffer) and buffer.current() == 1.5


class Reduce:
    """An object that unpickles as ``func(*args)``."""

    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@pytest.mark.parametrize('args', [(HistoryBuffer, '__init__'), (HistoryBuffer, '__class__'),
                                  (HistoryBuffer, 'no_such_method')])
def test_getattr_is_limited_to_history_buffer_methods(args):
    with pytest.raises(Exception, match='Refusing getattr'):
        torch.load(saved(Reduce(getattr, args)))


def test_other_globals_stay_refused():
    with pytest.raises(Exception, match='Unsupported global'):
        torch.load(saved(Reduce(print, ('hello', ))))
    assert torch.load(saved(Reduce(getattr, (HistoryBuffer, 'mean')))) is HistoryBuffer.mean
