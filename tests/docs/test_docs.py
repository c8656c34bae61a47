"""README.md and docs/: every relative link resolves; the results tables match their files.

(a) Every relative link and image of README.md and docs/**/*.md points to a
file of the repository (relative to the page, as GitHub resolves it), not to
a git-ignored one, and every ``#anchor`` into a Markdown page names one of
its headings (GitHub's heading ids).

(b) The README's two results tables print, at their own precision, the
numbers of the committed results files: the demo-scale table against
``docs/accuracy/**/results.json`` (the accuracy benchmark, the H100 runs) and
``docs/demo/summary.md`` (``make demo``); the full-scale table against
``docs/model_sizes.json`` (``python docs/model_sizes.py``) and the paper's
Table 4 as ``benchmarks/accuracy/report.py`` holds it.

Each check is a function returning its findings, so that the tests below
also show it failing on a broken link and on a changed number.
"""
import ast
import json
import re
import shutil
import statistics
import subprocess
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest

from conftest import ROOT, load_script

README = ROOT / 'README.md'
PAGES = [README] + sorted((ROOT / 'docs').rglob('*.md'))
DEMO_HEADING = '### Demo scale'
FULL_HEADING = '### Full scale'

_FENCE = re.compile(r'^(```|~~~).*?^\1[^\n]*$', re.M | re.S)
_CODE = re.compile(r'`[^`\n]*`')
_LINK = re.compile(r'!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)')
_HTML = re.compile(r'<(?:img|a)\b[^>]*?\b(?:src|href)\s*=\s*"([^"]+)"', re.I)
_SCHEME = re.compile(r'^[a-z][a-z0-9+.-]*:', re.I)


# ------------------------------------------------------------------ (a) links
def github_anchor(heading: str) -> str:
    """The id GitHub gives a heading: text lowercased, punctuation dropped.

    Args:
        heading: the heading's Markdown text, without the leading ``#``s.

    Returns:
        E.g. ``'Geometry (paper Sec. 2)'`` -> ``'geometry-paper-sec-2'``.
    """
    text = re.sub(r'!?\[([^\]]*)\]\([^)]*\)', r'\1', heading)  # link -> its text
    text = text.strip().lower().replace('`', '').replace('*', '')
    return re.sub(r'[^\w\- ]', '', text).replace(' ', '-')


def anchors(markdown: str) -> set:
    """Ids of every heading of a page (GitHub appends -1, -2 to repeats)."""
    seen: Dict[str, int] = {}
    ids = set()
    for match in re.finditer(r'^#{1,6}\s+(.+?)\s*#*\s*$', _FENCE.sub('', markdown),
                             re.M):
        base = github_anchor(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        ids.add(base if count == 0 else f'{base}-{count}')
    ids.update(re.findall(r'<a\s+(?:id|name)="([^"]+)"', markdown))
    return ids


def links(markdown: str) -> List[str]:
    """Targets of the Markdown links and images and HTML src/href of a page,
    outside code blocks and code spans."""
    text = _CODE.sub('code', _FENCE.sub('', markdown))
    return _LINK.findall(text) + _HTML.findall(text)


def _ignored_by_git(path: Path) -> bool:
    if shutil.which('git') is None or not (ROOT / '.git').exists():
        return False
    return subprocess.run(['git', 'check-ignore', '-q', str(path)], cwd=ROOT,
                          capture_output=True).returncode == 0


def broken_links(page: Path, root: Path = ROOT) -> List[str]:
    """Every relative link of ``page`` that does not resolve, with the reason.

    Args:
        page: a Markdown file inside ``root``.
        root: the repository root; a link may not leave it.

    Returns:
        One line per broken link (empty when all resolve).
    """
    markdown = page.read_text(encoding='utf-8')
    problems = []
    for target in links(markdown):
        if _SCHEME.match(target) or target.startswith('//'):
            continue  # http(s), mailto: not ours to check offline
        path_part, _, anchor = target.partition('#')
        dest = (page.parent / path_part).resolve() if path_part else page
        where = f'{page.relative_to(root)}: ({target})'
        if root.resolve() not in (dest, *dest.parents):
            problems.append(f'{where} leaves the repository')
        elif not dest.exists():
            problems.append(f'{where} -> {dest.relative_to(root.resolve())} '
                            f'does not exist')
        elif _ignored_by_git(dest):
            problems.append(f'{where} -> a git-ignored file, absent from a clone')
        elif anchor and dest.suffix == '.md' and anchor not in anchors(
                dest.read_text(encoding='utf-8')):
            problems.append(f'{where}: no heading with id #{anchor} in '
                            f'{dest.relative_to(root.resolve())}')
    return problems


@pytest.mark.parametrize('page', PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    assert broken_links(page) == []


def test_link_check_reports_missing_files_anchors_and_escapes(tmp_path):
    (tmp_path / 'docs').mkdir()
    (tmp_path / 'docs' / 'a.md').write_text(
        '# Title\n\n## Why FS trailed: the `box` regressors\n')
    page = tmp_path / 'README.md'
    page.write_text(
        '[ok](docs/a.md) [ok](docs/a.md#why-fs-trailed-the-box-regressors) '
        '[ok](#top-level) ![img](docs/missing.png) [bad](docs/a.md#nowhere) '
        '[out](../../etc/passwd) [web](https://example.org/x.md) `[code](no.md)`\n'
        '```\n[fenced](no.md)\n```\n# Top level\n')
    problems = broken_links(page, tmp_path)
    assert len(problems) == 3, problems
    assert 'docs/missing.png does not exist' in problems[0]
    assert 'no heading with id #nowhere' in problems[1]
    assert 'leaves the repository' in problems[2]


def test_github_anchor_examples():
    assert github_anchor('Geometry (paper Sec. 2)') == 'geometry-paper-sec-2'
    assert github_anchor('Full scale: SSD300 on VOC07+12 (paper Sec. 3.2)') == \
        'full-scale-ssd300-on-voc0712-paper-sec-32'
    assert github_anchor('Demo: what `make demo` runs and measured') == \
        'demo-what-make-demo-runs-and-measured'
    assert anchors('# A\n## A\n```\n# not a heading\n```\n') == {'a', 'a-1'}


# ------------------------------------------------------------- (b) the tables
def table_after(markdown: str, heading: str) -> Tuple[List[str], List[List[str]]]:
    """The first Markdown table after the heading that starts with ``heading``.

    Returns:
        (header cells, rows of cells), cells stripped.
    """
    start = markdown.find('\n' + heading)
    assert start >= 0, f'README has no heading starting with {heading!r}'
    lines = markdown[start:].splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith('|'))
    table = []
    for line in lines[first:]:
        if not line.startswith('|'):
            break
        table.append([c.strip() for c in line.strip().strip('|').split('|')])
    header, rule, *rows = table
    assert set(''.join(rule)) <= set('-: '), f'no table rule under {heading!r}'
    return header, rows


def _column(header: List[str], name: str) -> int:
    assert name in header, f'results table has no column {name!r}: {header}'
    return header.index(name)


def _int(cell: str) -> int:
    return int(cell.replace(',', ''))


def _printed(value: float, like: str) -> str:
    """``value`` with as many decimals as the number ``like``."""
    decimals = len(like.split('.')[1]) if '.' in like else 0
    return f'{value:.{decimals}f}'


def _load_json(relative: str):
    return json.loads((ROOT / relative).read_text(encoding='utf-8'))


def _accuracy_rows(name: str) -> List[Tuple[str, dict]]:
    """Every row called ``name`` in the accuracy benchmark's results files."""
    found = []
    for path in sorted((ROOT / 'docs' / 'accuracy').glob('*/results.json')):
        data = json.loads(path.read_text(encoding='utf-8'))
        if isinstance(data, dict):
            found += [(str(path.relative_to(ROOT)), row)
                      for row in data.get('rows', []) if row['name'] == name]
    return found


_DEMO_SUMMARY = re.compile(r'docs/demo/(?:[\w.-]+/)?summary\.md')


def _demo_summary(source: str, wq: bool) -> Tuple[float, int]:
    """(mAP of the FSNet or FSNet-WQ row, training iterations) of a
    ``make demo`` table (docs/demo/summary.md, or an earlier demo's)."""
    text = (ROOT / source).read_text()
    _, rows = table_after('\n' + text, '| variant')
    iters = re.search(r'^(\d+) training iterations', text, re.M)
    assert iters, f'{source} does not say its training iterations'
    for row in rows:
        if row[0] == ('FSNet-WQ' if wq else 'FSNet'):
            return float(row[-1]), int(iters.group(1))
    raise AssertionError(f'{source} has no FSNet / FSNet-WQ row')


_MAP_CELL = re.compile(r'^\[(\d+\.\d+)(?: \+- (\d+\.\d+))?\]\(([^)]+)\) '
                       r'\((\d+) seeds?, (CPU|H100)\b[^)]*\)$')


def _expected_map(source: str, variant: str, wq: bool, iters: int
                  ) -> Tuple[Optional[float], Optional[float], int, str]:
    """(mean, std or None for one seed, seeds, device) of a variant in ``source``."""
    if source == 'docs/accuracy/h100/results.json':
        assert not wq, 'the H100 runs did not measure WQ'
        maps = [r['mAP'] for r in _load_json(source)
                if r['variant'] == variant and r['iters'] == iters
                and r['status'] == 'ok' and r['mAP'] is not None]
        assert maps, f'{source} has no finished {variant} run at {iters}'
        return (statistics.mean(maps),
                statistics.stdev(maps) if len(maps) > 1 else None,
                len(maps), 'H100')
    if _DEMO_SUMMARY.fullmatch(source):
        assert variant.startswith('fs-k3x1-interleave'), (
            'make demo trains the FS model only')
        found, demo_iters = _demo_summary(source, wq)
        assert demo_iters == iters, (
            f'{source} trained {demo_iters} iterations, the column says {iters}')
        return found, None, 1, 'CPU'
    match = re.fullmatch(r'docs/accuracy/[\w.-]+/results\.json', source)
    assert match, f'{source}: not a results file this test knows'
    data = _load_json(source)
    assert data['iters'] == iters, f'{source} ran {data["iters"]} iterations'
    name = variant + ('-wq' if wq else '')
    row = next((r for r in data['rows'] if r['name'] == name), None)
    assert row is not None, f'{source} has no row {name}'
    return row['mAP'], row['std'] if row['seeds'] > 1 else None, row['seeds'], 'CPU'


#: Two runs of one model write files that differ by a multiple of 64 bytes:
#: the checkpoint's metadata (run name, time, source file name) changes the
#: pickle's length and torch.save aligns every tensor record to 64 bytes.
BYTES_SLACK = 256


def demo_table_errors(markdown: str) -> List[str]:
    """Differences between the README's demo-scale table and its results files."""
    header, rows = table_after(markdown, DEMO_HEADING)
    col = {name: _column(header, name) for name in (
        'config', 'benchmark variant', 'params', 'effective params (WQ)',
        'checkpoint bytes')}
    map_cols = [(i, int(re.search(r'(\d+) iterations', h).group(1)))
                for i, h in enumerate(header) if h.startswith('mAP')]
    assert map_cols, 'the demo-scale table has no mAP column'
    errors = []
    for row in rows:
        config = re.match(r'`([^`]+)`', row[col['config']])
        if config and not (ROOT / config.group(1)).is_file():
            errors.append(f'{config.group(1)} does not exist')
        variant_cell = row[col['benchmark variant']]
        variant = re.match(r'`([^`]+)`', variant_cell).group(1)
        wq = variant_cell.endswith('WQ')
        sources = _accuracy_rows(variant + ('-wq' if wq else ''))
        if not sources:
            errors.append(f'{variant_cell}: in no docs/accuracy/*/results.json')
        for source, data in sources:
            for key, name in (('params', 'params'),
                              ('effective', 'effective params (WQ)'),
                              ('bytes', 'checkpoint bytes')):
                slack = BYTES_SLACK if key == 'bytes' else 0
                if abs(_int(row[col[name]]) - data[key]) > slack:
                    errors.append(f'{variant_cell} {name}: README '
                                  f'{row[col[name]]}, {source} {data[key]:,.0f}')
        for i, iters in map_cols:
            if row[i] == 'not run':
                continue
            cell = _MAP_CELL.match(row[i])
            if not cell:
                errors.append(f'{variant_cell}, {iters} iterations: cell '
                              f'{row[i]!r} is not "[mean +- std](file) (N seeds, '
                              f'DEVICE)" or "not run"')
                continue
            mean, std, source, seeds, device = cell.groups()
            if not (ROOT / source).is_file():
                errors.append(f'{source} does not exist')
                continue
            e_mean, e_std, e_seeds, e_device = _expected_map(source, variant, wq,
                                                             iters)
            expected = (_printed(e_mean, mean),
                        None if e_std is None else _printed(e_std, std or '0.000'),
                        e_seeds, e_device)
            if (mean, std, int(seeds), device) != expected:
                errors.append(f'{variant_cell}, {iters} iterations: README '
                              f'{(mean, std, int(seeds), device)}, {source} '
                              f'{expected}')
    return errors


def _paper_table4() -> Dict[str, Tuple[float, float]]:
    """``PAPER_TABLE4`` of fsnet_mmdet/models/fs_ssd_vgg.py, read without importing it."""
    tree = ast.parse((ROOT / 'fsnet_mmdet' / 'models' / 'fs_ssd_vgg.py').read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                getattr(t, 'id', None) == 'PAPER_TABLE4' for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError('fsnet_mmdet/models/fs_ssd_vgg.py defines no PAPER_TABLE4')


def full_table_errors(markdown: str) -> List[str]:
    """Differences between the README's full-scale table and its results files."""
    header, rows = table_after(markdown, FULL_HEADING)
    col = {name: _column(header, name) for name in (
        'config', 'params (ours)', 'effective params, WQ (ours)',
        'checkpoint bytes (ours)', 'mAP (ours)', 'params (paper)',
        'mAP, VOC2007 test (paper)')}
    sizes = _load_json('docs/model_sizes.json')['models']
    paper = _paper_table4()
    errors = []
    for row in rows:
        match = re.fullmatch(r'`([^`]+)`: (\S+)', row[col['config']])
        if not match:
            errors.append(f'config cell {row[col["config"]]!r} is not "`path`: label"')
            continue
        config, label = match.groups()
        if not (ROOT / config).is_file():
            errors.append(f'{config} does not exist')
        ours = sizes.get(config)
        if ours is None:
            errors.append(f'{config}: not in docs/model_sizes.json')
            continue
        if ours['label'] != label:
            errors.append(f'{config}: README label {label}, '
                          f'docs/model_sizes.json {ours["label"]}')
        for key, name in (('params', 'params (ours)'),
                          ('effective', 'effective params, WQ (ours)'),
                          ('bytes', 'checkpoint bytes (ours)')):
            if _int(row[col[name]]) != ours[key]:
                errors.append(f'{label} {name}: README {row[col[name]]}, '
                              f'docs/model_sizes.json {ours[key]:,}')
        if row[col['mAP (ours)']] != 'not run':
            errors.append(f'{label} mAP (ours): {row[col["mAP (ours)"]]!r} has no '
                          f'results file (no full VOC training has been run)')
        if label not in paper:
            errors.append(f'{label}: not in the paper\'s Table 4 (PAPER_TABLE4)')
            continue
        params, mean_ap = paper[label]
        for cell, value, unit in ((row[col['params (paper)']], params / 1e6, 'M'),
                                  (row[col['mAP, VOC2007 test (paper)']], mean_ap, '%')):
            number = cell[:-1] if cell.endswith(unit) else None
            if number is None or _printed(value, number) != number:
                errors.append(f'{label}: README paper cell {cell!r}, Table 4 '
                              f'{value}{unit}')
    return errors


def test_demo_scale_table_matches_results_files():
    assert demo_table_errors(README.read_text(encoding='utf-8')) == []


def test_full_scale_table_matches_results_files():
    assert full_table_errors(README.read_text(encoding='utf-8')) == []


@pytest.mark.parametrize('old, new, check', [
    ('| 230,026 | 60,922 | 276,833 |', '| 230,026 | 60,923 | 276,833 |',
     demo_table_errors),
    ('| 60,922 | 276,833 |', '| 60,922 | 277,833 |', demo_table_errors),
    ('[0.533 +- 0.062]', '[0.534 +- 0.062]', demo_table_errors),
    ('[0.760 +- 0.022](docs/accuracy/iters1500/results.json) (3 seeds',
     '[0.760 +- 0.022](docs/accuracy/iters1500/results.json) (2 seeds',
     demo_table_errors),
    ('(3 seeds, H100) | [0.816', '(3 seeds, CPU) | [0.816', demo_table_errors),
    ('[0.568](docs/demo/fp32-750/summary.md)',
     '[0.569](docs/demo/fp32-750/summary.md)', demo_table_errors),
    ('| 6,974,201 |', '| 6,974,202 |', full_table_errors),
    ('| 67.60% |', '| 67.61% |', full_table_errors),
])
def test_table_checks_report_a_changed_number(old, new, check):
    text = README.read_text(encoding='utf-8')
    assert text.count(old) == 1, f'{old!r} should appear once in the README'
    assert check(text) == []
    assert check(text.replace(old, new)), f'{old!r} -> {new!r} went unnoticed'


# ------------------------------------------------------- docs/draw_summary.py
def _draw_summary():
    return load_script('docs/draw_summary.py')


def test_summary_picture_geometry_is_the_papers_worked_example():
    draw = _draw_summary()
    g = draw.worked_example()
    assert (g.sampling, g.strides, g.summary_shape) == ((4, 4, 4), (2, 2, 16),
                                                        (64, 8, 8))
    # Filter (k1, k2) covers rows 2 k1 .. 2 k1 + 2 and columns 2 k2 .. 2 k2 + 2
    # of the 8 x 8 plane, modulo 8: (3, 3) wraps into row and column 0.
    assert draw.spatial_cells(g, 0, 1) == {(r, c) for r in (0, 1, 2)
                                           for c in (2, 3, 4)}
    assert draw.spatial_cells(g, 3, 3) == {(r, c) for r in (6, 7, 0)
                                           for c in (6, 7, 0)}
    assert draw.channel_spans(g) == [[(0, 64)], [(16, 48), (0, 16)],
                                     [(32, 32), (0, 32)], [(48, 16), (0, 48)]]


def test_model_sizes_json_is_what_its_script_measures_now():
    """docs/model_sizes.json against ``docs/model_sizes.py`` run now, for
    FSNet-1-WQ: one model build; its effective count and compressed bytes are
    the entries a change of the WQ format would move (tests/models/test_ssd.py
    checks the stored counts of the others)."""
    module = load_script('docs/model_sizes.py')
    configs = ['configs/fsnet_ssd300_voc_wq.py']
    committed = _load_json('docs/model_sizes.json')['models']
    assert module.measure(configs)['models'] == {c: committed[c] for c in configs}
