# Copyright (c) mmdet-sk contributors. All rights reserved.
"""The lab of the seeded experiments (``sk_study.py``, ``sk_ablation.py``, ``sk_scratch.py``):
running and resuming their runs (:mod:`.runs`), what each arm costs (:mod:`.cost`), their
statistics and decision rules (:mod:`.stats`) and their report files (:mod:`.report`).

Not part of the installed package: it runs the repository's own ``tools/train.py`` and
``tools/test.py`` on its demo configs, so it needs a checkout. The tools beside this folder
import it as ``sk_lab``: Python finds a script's imports in its own folder first.
"""
