from .sk_attention import SKAttention
from .sk_conv import SKConv

__all__ = ['SKAttention', 'SKConv']
