"""Entry points behind ``tools/*.py``."""
import os.path as osp
import runpy
import sys
from typing import Callable, List, Optional


def one_line_errors(main: Callable[[Optional[List[str]]], None]
                    ) -> Callable[[Optional[List[str]]], None]:
    """Run a tool's main; expected errors exit with one line, no traceback."""
    def wrapped(argv: Optional[List[str]] = None) -> None:
        try:
            main(argv)
        except (ValueError, RuntimeError, FileNotFoundError) as err:
            raise SystemExit(f'error: {err}') from None
    return wrapped


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
    """Run MMDetection's ``tools/<name>`` with fsnet_mmdet loaded.

    The script is MMDetection's own, unchanged: its ``parse_args`` reads the
    command line, the config is checked (:func:`fsnet_mmdet.engine.validate.check_config`)
    before anything is built, then its ``main`` runs.
    """
    import fsnet_mmdet  # noqa: F401  registers modules, applies compat fixes
    from fsnet_mmdet.engine import compat
    from fsnet_mmdet.engine.validate import check_config
    from mmengine.config import Config

    path = mmdet_tool_path(name)
    sys.argv[0] = path
    tool = runpy.run_path(path, run_name='mmdet_tool')  # defines, runs nothing
    args = tool['parse_args']()
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    try:
        check_config(cfg, args.config, launcher=args.launcher,
                     training=name == 'train.py')
    except ValueError as err:
        raise SystemExit(f'error: {err}') from None
    with compat.strict_loading(name == 'test.py'):
        tool['main']()
