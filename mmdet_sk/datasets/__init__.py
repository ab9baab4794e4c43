from .synthetic_coco import (CLASSES, data_root_options, dataset_stats, ensure_demo_data,
                             generate_coco_shapes)

__all__ = [
    'CLASSES', 'generate_coco_shapes', 'ensure_demo_data', 'dataset_stats', 'data_root_options'
]
