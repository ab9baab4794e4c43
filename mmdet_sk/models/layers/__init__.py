from .sk_attention import SKAttention

__all__ = ['SKAttention']
