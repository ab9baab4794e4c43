# Copyright (c) mmdet-sk contributors. All rights reserved.
"""Generate the synthetic COCO-format shapes data set of the demo and print its statistics.

    python tools/misc/generate_demo_data.py --out-dir data/coco_shapes
"""
import argparse
import time

from mmdet_sk.datasets import CLASSES, dataset_stats, ensure_demo_data, generate_coco_shapes
from mmdet_sk.datasets.synthetic_coco import SPLITS


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Generate the synthetic shapes data set')
    parser.add_argument('--out-dir', default='data/coco_shapes', help='data root to write')
    parser.add_argument('--num-train', type=int, default=800, help='training images')
    parser.add_argument('--num-val', type=int, default=200, help='validation images')
    parser.add_argument('--img-size', type=int, default=256, help='side of the square images')
    parser.add_argument('--seed', type=int, default=0, help='random seed')
    parser.add_argument('--force', action='store_true',
                        help='regenerate even if a complete data set with these arguments exists')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    kwargs = dict(num_train=args.num_train, num_val=args.num_val, img_size=args.img_size,
                  seed=args.seed)
    start = time.perf_counter()
    if args.force:
        generate_coco_shapes(args.out_dir, **kwargs)
    else:
        ensure_demo_data(args.out_dir, **kwargs)
    print(f'{args.out_dir}: ready in {time.perf_counter() - start:.1f} s; classes {CLASSES}')
    for split in SPLITS:
        stats = dataset_stats(f'{args.out_dir}/annotations/instances_{split}2017.json')
        n = max(stats['instances'], 1)
        print(f"[{split}] {stats['images']} images, {stats['instances']} instances")
        print('  per class: ' + ', '.join(f'{k} {v}' for k, v in stats['per_class'].items()))
        print('  per area:  ' + ', '.join(f'{k} {v} ({100 * v / n:.0f}%)'
                                          for k, v in stats['per_area'].items()))


if __name__ == '__main__':
    main()
