"""docs/architecture.py: the package's import rules hold, and the check
catches each kind of break (on a made-up import graph)."""
import pytest

from conftest import ROOT, load_script


@pytest.fixture(scope='module')
def arch():
    return load_script('docs/architecture.py')


def test_the_package_keeps_every_rule(arch):
    assert arch.violations() == []


def test_every_family_has_a_level_and_a_role(arch):
    on_disk = {p.name for p in (ROOT / 'fsnet_mmdet').iterdir()
               if p.is_dir() and (p / '__init__.py').exists()}
    in_levels = [f for row in arch.LEVELS for f in row]
    assert sorted(in_levels) == sorted(on_disk) == sorted(arch.ROLES)


def _graph(**edges):
    """module -> [(imported module, names, line)] from 'a.b=c.d:_x' specs."""
    g = {}
    for module, deps in edges.items():
        g[f'fsnet_mmdet.{module}'] = [
            (f'fsnet_mmdet.{t.split(":")[0]}',
             t.split(':')[1].split(',') if ':' in t else [], 1) for t in deps]
    return g


def test_check_catches_an_upward_import(arch):
    g = _graph(**{'layers.fsconv': ['engine.hooks:FiniteLossHook'],
                  'engine.hooks': []})
    (problem, ) = arch.violations(g)
    assert 'fsnet_mmdet.layers.fsconv' in problem and 'engine.hooks' in problem


def test_check_catches_peers_and_the_cli_layer(arch):
    g = _graph(**{'compression.kse': ['conversion.modules:replace_module'],
                  'conversion.modules': [],
                  'engine.hooks': ['tools.pipeline:run_tool'],
                  'tools.pipeline': []})
    problems = arch.violations(g)
    assert len(problems) == 2
    assert any('compression may import only' in p for p in problems)
    assert any('engine may import only' in p for p in problems)


def test_check_catches_private_names_cycles_and_root_modules(arch):
    g = _graph(**{'layers.a': ['layers.b:_helper'], 'layers.b': ['layers.a:x'],
                  'stray': []})
    problems = arch.violations(g)
    assert any("private ['_helper']" in p for p in problems)
    assert any(p.startswith('import cycle: fsnet_mmdet.layers.a -> '
                            'fsnet_mmdet.layers.b') for p in problems)
    assert any('fsnet_mmdet.stray: a module at the package root' in p
               for p in problems)
    assert len(problems) == 3


def test_drawing_writes_a_png(arch, tmp_path):
    out = tmp_path / 'architecture.png'
    arch.draw(str(out))
    assert out.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
