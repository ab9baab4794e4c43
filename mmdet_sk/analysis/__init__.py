"""What SK selects, read from a model: its SK modules grouped per stage and neck level and their
selection weights (the :class:`~mmdet_sk.engine.SKSelectionHook` logs them), how far each
module moves what it replaced, and the statistics and files of a scale analysis
(``tools/analysis_tools/sk_scale_analysis.py``)."""
from .scale_report import write_report
from .scale_stats import large_kernel_summary, spearman, summarize, trend_verdict, verdicts
from .sk_selection import (SKGroup, area_bucket, collect_scale_selection, recording,
                           scale_pipeline, selection_scalars, set_recording, sk_groups,
                           unwrap_model)
from .sk_usage import sk_output_change

__all__ = [
    'SKGroup', 'sk_groups', 'set_recording', 'recording', 'selection_scalars', 'unwrap_model',
    'area_bucket', 'scale_pipeline', 'collect_scale_selection', 'summarize', 'spearman',
    'trend_verdict', 'verdicts', 'large_kernel_summary', 'write_report', 'sk_output_change'
]
