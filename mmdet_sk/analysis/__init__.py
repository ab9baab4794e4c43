from .sk_selection import (SKGroup, area_bucket, collect_scale_selection, recording,
                           scale_pipeline, selection_scalars, set_recording, sk_groups, spearman,
                           summarize, trend_verdict, unwrap_model, verdicts, write_report)
from .sk_usage import sk_output_change

__all__ = [
    'SKGroup', 'sk_groups', 'set_recording', 'recording', 'selection_scalars', 'unwrap_model',
    'area_bucket', 'scale_pipeline', 'collect_scale_selection', 'summarize', 'spearman',
    'trend_verdict', 'verdicts', 'write_report', 'sk_output_change'
]
