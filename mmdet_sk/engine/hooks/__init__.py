from .sk_selection_hook import SKSelectionHook

__all__ = ['SKSelectionHook']
