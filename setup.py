"""mmdet-sk: Selective Kernel attention for MMDetection 3.x."""
import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
# Ranges the test suite passes on (README, "Tested stacks"): pip leaves an OpenMMLab environment
# that satisfies them as it is. torch 2.1 is the newest torch with mmcv 2.1.0's prebuilt ops;
# mmcv < 2.2.0 is what mmdet 3.3 itself asks for. torch has no upper bound, as in MMDetection:
# a cap below the user's torch would make pip replace it and break the mmcv ops built against
# it; the newest torch tested is in the README's table (`make newest`). The exact pins of the
# project's own environment (`make env`) are in requirements.txt.
requirements = [
    'torch>=2.1.0',
    'mmcv>=2.1.0,<2.2.0',
    'mmengine>=0.10.4,<1.0.0',
    'mmdet>=3.3.0,<3.4.0',
    'pycocotools',
]
version = re.search(r"__version__ = '([^']+)'",
                    (HERE / 'mmdet_sk' / 'version.py').read_text()).group(1)

setup(
    name='mmdet_sk',
    version=version,
    description='Selective Kernel attention (SKNet) plugins, necks and configs for MMDetection',
    long_description=(HERE / 'README.md').read_text(encoding='utf-8'),
    long_description_content_type='text/markdown',
    packages=find_packages(include=['mmdet_sk', 'mmdet_sk.*']),
    # The classifiers name the Pythons the whole suite has passed on (docs/install.md, "Tested
    # stacks"): 3.10 (make compat COMPAT=.venv-py310 COMPAT_PY=python3.10) and 3.11. Older ones
    # lack wheels of the test-only pins (onnx, onnxruntime). Newer ones are not refused: a cap
    # would keep pip from installing beside the interpreter of a working environment, whose
    # torch and mmcv decide what runs there.
    python_requires='>=3.10',
    classifiers=[
        'Programming Language :: Python :: 3',
        'Programming Language :: Python :: 3.10',
        'Programming Language :: Python :: 3.11',
    ],
    install_requires=requirements,
    license='Apache-2.0',
    zip_safe=False,
)
