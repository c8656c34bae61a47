"""The package's families, read from its own imports: checked and drawn.

``python docs/architecture.py`` checks the rules below on every module of
``fsnet_mmdet`` and draws ``docs/architecture.png`` (the families, one row per
level, an arrow for every family that imports another, with the number of
import statements); ``tests/docs/test_architecture.py`` runs the same check, so the
picture and the rules cannot drift from the code.

Rules:
1. A family imports only families on lower rows of :data:`LEVELS` (and
   itself); the package face (``fsnet_mmdet/__init__.py``) imports anything
   but the command-line layer, which nothing in the library imports.
2. No import cycle between modules.
3. No private name (``_x``) imported from another module.
4. The package root holds only its face: every other module is in a family.
"""
from __future__ import annotations

import argparse
import ast
import os
from collections import Counter
from typing import Dict, Iterable, List, Optional, Set, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = 'fsnet_mmdet'
OUT = os.path.join(ROOT, 'docs', 'architecture.png')

#: Families, bottom row first; a family may import the rows below it only.
LEVELS: List[Tuple[str, ...]] = [
    ('utils', ),
    ('layers', ),
    ('models', 'datasets'),
    ('compression', 'conversion'),
    ('deploy', ),
    ('engine', ),
    ('tools', ),
]

#: One line per family: what it holds (the picture's labels, the doc's table).
ROLES = {
    'utils': 'atomic writes, tensor packing, patching',
    'layers': 'THE layer: geometry, index, Eq. 2, FSConv, FSLinear, WQ',
    'models': 'FSSSD300, FSSSDHead',
    'datasets': 'CheckedVOCDataset, synthetic VOC',
    'compression': 'other methods: int8, BSF, KSE, LRF',
    'conversion': 'from a dense model: fs_convert, projection, ...',
    'deploy': 'ONNX export, onnxruntime',
    'engine': 'MMEngine glue: fixes, hooks, build hooks, checks',
    'tools': 'command-line layer behind tools/*.py',
}


def level_of(family: str) -> int:
    for i, row in enumerate(LEVELS):
        if family in row:
            return i
    raise KeyError(family)


def module_name(path: str) -> str:
    rel = os.path.relpath(path, ROOT)[:-len('.py')].replace(os.sep, '.')
    return rel[:-len('.__init__')] if rel.endswith('.__init__') else rel


def family_of(module: str) -> str:
    """``fsnet_mmdet.layers.fsconv`` -> ``layers``; the face -> ``''``."""
    parts = module.split('.')
    return parts[1] if len(parts) > 1 else ''


def modules() -> Dict[str, str]:
    """Every module of the package: name -> path."""
    found = {}
    for folder, _, files in os.walk(os.path.join(ROOT, PACKAGE)):
        for f in files:
            if f.endswith('.py'):
                path = os.path.join(folder, f)
                found[module_name(path)] = path
    return found


def imports(path: str, module: str, known: Set[str]
            ) -> Iterable[Tuple[str, List[str], int]]:
    """(imported package module, names imported from it, line) of one file,
    at any depth (function-level imports count); names is None for a plain
    ``import fsnet_mmdet`` (registration: allowed anywhere)."""
    is_pkg = path.endswith('__init__.py')
    tree = ast.parse(open(path).read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split('.') if is_pkg else module.split('.')[:-1]
                base = base[:len(base) - node.level + 1]
                target = '.'.join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ''
            if not target.split('.')[0] == PACKAGE:
                continue
            names = [a.name for a in node.names]
            # ``from . import x``: x may be a submodule
            subs = [f'{target}.{n}' for n in names if f'{target}.{n}' in known]
            for sub in subs:
                yield sub, [], node.lineno
            rest = [n for n in names if f'{target}.{n}' not in known]
            if rest or not subs:
                yield target, rest, node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split('.')[0] == PACKAGE:
                    yield alias.name, None, node.lineno  # a plain import


def graph() -> Dict[str, List[Tuple[str, List[str], int]]]:
    """module -> its imports of package modules."""
    mods = modules()
    known = set(mods)
    return {m: [(t, names, line) for t, names, line in imports(p, m, known)]
            for m, p in sorted(mods.items())}


def _cycles(edges: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on: Set[str] = set()
    found: List[List[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def violations(g: Optional[Dict[str, list]] = None) -> List[str]:
    """Every broken rule (module docstring), one line each; [] when clean."""
    g = graph() if g is None else g
    problems = []
    families = {f for row in LEVELS for f in row}
    for module in g:
        if module != PACKAGE and '.' not in module[len(PACKAGE) + 1:] \
                and family_of(module) not in families:
            problems.append(f'{module}: a module at the package root (put it '
                            f'in a family: {sorted(families)})')
    for module, deps in g.items():
        fam = family_of(module)
        for target, names, line in deps:
            tfam = family_of(target)
            where = f'{module} (line {line})'
            if target == PACKAGE and module != PACKAGE and names is not None:
                problems.append(f'{where} imports the package face {PACKAGE}; '
                                f'import the module that defines the name')
            if tfam and fam and tfam != fam and tfam in families \
                    and fam in families and level_of(tfam) >= level_of(fam):
                problems.append(f'{where} imports {target}: {fam} may import '
                                f'only {sorted(f for r in LEVELS[:level_of(fam)] for f in r)}')
            if module == PACKAGE and tfam == 'tools':
                problems.append(f'{where}: the package face imports the '
                                f'command-line layer {target}')
            private = [n for n in names or () if n.startswith('_') and n != '__version__']
            if private and target != module:
                problems.append(f'{where} imports private {private} from {target}')
    edges = {m: {t for t, _, _ in deps if t in g and t != m}
             for m, deps in g.items()}
    # a package __init__ importing its own submodules is not a cycle
    for m in edges:
        edges[m] = {t for t in edges[m] if not (t.startswith(m + '.'))}
    for comp in _cycles(edges):
        problems.append(f'import cycle: {" -> ".join(comp)}')
    return problems


def family_edges(g: Optional[Dict[str, list]] = None) -> Counter:
    """(importer family, imported family) -> import statements."""
    g = graph() if g is None else g
    count: Counter = Counter()
    for module, deps in g.items():
        fam = family_of(module)
        for target, _, _ in deps:
            tfam = family_of(target)
            if fam and tfam and fam != tfam:
                count[fam, tfam] += 1
    return count


def draw(out: str = OUT) -> None:
    """The families as boxes, one row per level, arrows for real imports."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    from fsnet_mmdet.utils.io import save_figure_atomic

    pos = {}
    for y, row in enumerate(LEVELS):
        for i, fam in enumerate(row):
            pos[fam] = ((i + 1) / (len(row) + 1), y)
    fig, ax = plt.subplots(figsize=(9, 7.5))
    for (src, dst), n in sorted(family_edges().items()):
        (x0, y0), (x1, y1) = pos[src], pos[dst]
        ax.annotate('', xy=(x1, y1 + 0.22), xytext=(x0, y0 - 0.22),
                    arrowprops=dict(arrowstyle='->', color='0.55', lw=0.6 + 0.15 * min(n, 10),
                                    connectionstyle='arc3,rad=0.12'))
    for fam, (x, y) in pos.items():
        ax.text(x, y, f'{fam}/\n{ROLES[fam]}', ha='center', va='center',
                fontsize=8, bbox=dict(boxstyle='round', fc='#e8f0fa', ec='#4a6fa5'))
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.6, len(LEVELS) - 0.4)
    ax.axis('off')
    ax.set_title('fsnet_mmdet: families and their imports (an arrow: imports; '
                 'every arrow points down)\ndrawn by docs/architecture.py from '
                 'the code', fontsize=9)
    fig.tight_layout()
    save_figure_atomic(fig, out, dpi=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', default=OUT)
    parser.add_argument('--check-only', action='store_true')
    args = parser.parse_args()
    problems = violations()
    for p in problems:
        print(p)
    if not args.check_only:
        draw(args.out)
        print(f'wrote {args.out}')
    raise SystemExit(1 if problems else 0)


if __name__ == '__main__':
    main()
