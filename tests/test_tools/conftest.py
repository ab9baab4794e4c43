"""The tools of ``tools/analysis_tools`` and their lab package ``sk_lab`` importable by name, as
they see each other when run (Python puts a script's folder first on ``sys.path``)."""
import os.path as osp
import sys

ANALYSIS_TOOLS = osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), 'tools',
                          'analysis_tools')
if ANALYSIS_TOOLS not in sys.path:
    sys.path.insert(0, ANALYSIS_TOOLS)
