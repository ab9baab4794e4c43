from .flops import thop_flops

__all__ = ['thop_flops']
