"""mmdet-sk: Selective Kernel attention for MMDetection 3.x."""
import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
# Runtime requirements come from the one pinned list; build tools and test-only tools stay out.
_BUILD_OR_TEST_ONLY = {'setuptools', 'ninja', 'wheel', 'pytest', 'ultralytics-thop', 'onnx',
                       'onnxscript', 'onnxruntime', 'tensorboard'}
requirements = [
    line.strip() for line in (HERE / 'requirements.txt').read_text().splitlines()
    if line.strip() and not line.startswith('#')
    and re.split(r'[<>=!~ ]', line.strip())[0] not in _BUILD_OR_TEST_ONLY
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
    python_requires='>=3.8',
    install_requires=requirements,
    license='Apache-2.0',
    zip_safe=False,
)
