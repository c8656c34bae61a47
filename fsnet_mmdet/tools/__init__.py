"""Entry points behind ``tools/*.py``."""
import os.path as osp
import runpy
import sys


def mmdet_tool_path(name: str) -> str:
    """Path of one of MMDetection's own scripts (shipped in ``mmdet/.mim/tools``)."""
    import mmdet

    path = osp.join(osp.dirname(mmdet.__file__), '.mim', 'tools', name)
    if not osp.isfile(path):
        raise FileNotFoundError(
            f'{path} not found: mmdet must be installed from its wheel '
            f'(pip install mmdet==3.3.0), which ships its tools')
    return path


def run_mmdet_tool(name: str) -> None:
    """Run MMDetection's ``tools/<name>`` as ``__main__`` with fsnet_mmdet loaded."""
    import fsnet_mmdet  # noqa: F401  registers modules, applies compat fixes

    path = mmdet_tool_path(name)
    sys.argv[0] = path
    runpy.run_path(path, run_name='__main__')
