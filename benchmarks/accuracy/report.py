"""The accuracy benchmark's report: per-point summaries over seeds, the
table in the form of the paper's Table 4 and its plot, issue 22's
comparison table with its Pareto fronts and plots, and the files under
``--docs`` (``results.md``, ``results.json``, the plots).
"""
import os
import statistics
from typing import List

from fsnet_mmdet.models import PAPER_TABLE4
from fsnet_mmdet.utils.io import (atomic_path, write_json_atomic,
                                 write_text_atomic)

from .runner import LOSSES
from .variants import Variant, method_of

def _mean_std(values: List[float]) -> tuple:
    return (statistics.mean(values),
            statistics.stdev(values) if len(values) > 1 else 0.0)


def _typical(values: list):
    """The mean over seeds (exact for the counts that do not vary), an int
    for ints."""
    mean = statistics.mean(values)
    return round(mean) if all(isinstance(v, int) for v in values) else mean


def _schedule(variant: Variant, run: dict) -> str:
    """Training iterations of a run, as the table shows them."""
    text = str(run.get('iters', '-'))
    if run.get('finetune_iters'):
        text += f' + {run["finetune_iters"]}'
    return text + (', then int8' if variant.compress == 'int8' else '')


def summarize(variants: List[Variant], results: List[dict]) -> List[dict]:
    """One row per variant (and per WQ variant): mean and std over seeds."""
    rows = []
    for v in variants:
        runs = [r for r in results if r['variant'] == v.name]
        if not runs:
            continue
        times = [r['s_iter'] for r in runs if r.get('s_iter')]
        flops = [r['flops'] for r in runs if r.get('flops') is not None]
        base = dict(name=v.name, label=v.label, widen=v.widen, curve=v.curve,
                    method=method_of(v), seeds=len(runs),
                    params=_typical([r['params'] for r in runs]),
                    s_iter=statistics.median(times) if times else None,
                    flops=_typical(flops) if flops else None,
                    schedule=_schedule(v, runs[0]))
        for key in LOSSES:
            losses = [r[key] for r in runs if r.get(key) is not None]
            base[key] = statistics.mean(losses) if losses else None
        m, s = _mean_std([r['mAP'] for r in runs])
        rows.append(dict(base, effective=_typical([r.get('effective',
                                                         r['params'])
                                                   for r in runs]),
                         bytes=_typical([r['bytes'] for r in runs]), mAP=m,
                         std=s, maps=[r['mAP'] for r in runs]))
        if 'mAP_wq' in runs[0]:
            m, s = _mean_std([r['mAP_wq'] for r in runs])
            rows.append(dict(base, name=v.name + '-wq', label=v.label + ', WQ',
                             curve=v.curve + '-wq' if v.curve else '',
                             method=base['method'] + '-WQ',
                             effective=_typical([r['effective_wq']
                                                 for r in runs]),
                             bytes=_typical([r['bytes_wq'] for r in runs]),
                             mAP=m, std=s, maps=[r['mAP_wq'] for r in runs]))
    return rows


def table(rows: List[dict]) -> str:
    widest = next((r for r in rows if r['name'] == 'dense-w0.25'), None)
    lines = ['| model | width | # params | effective params | checkpoint bytes '
             '| s / iter | final train loss (cls + bbox) | mAP@0.5 (mean +- std) | seeds '
             '| retention vs dense w0.25 |',
             '|---|---|---|---|---|---|---|---|---|---|']
    def order(r: dict) -> tuple:  # curves in turn, each followed by its WQ
        return (r['curve'] == '', r['curve'].removesuffix('-wq'),
                r['curve'].endswith('-wq'), -r['effective'])

    for r in sorted(rows, key=order):
        keep = (f'{100 * r["mAP"] / widest["mAP"]:.0f}%' if widest and
                widest['mAP'] > 0 else '-')
        speed = f'{r["s_iter"]:.2f}' if r['s_iter'] else '-'
        loss = (f'{r["loss"]:.2f} ({r["loss_cls"]:.2f} + {r["loss_bbox"]:.2f})'
                if r.get('loss_bbox') is not None
                and not r['name'].endswith('-wq') else '-')
        lines.append(
            f'| {r["label"]} | {r["widen"]:g} | {r["params"]:,} | '
            f'{r["effective"]:,.0f} | {r["bytes"]:,} | {speed} | {loss} | '
            f'{r["mAP"]:.3f} +- {r["std"]:.3f} | {r["seeds"]} | {keep} |')
    return '\n'.join(lines)


def plot(rows: List[dict], out: str, title: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, (ax, paper) = plt.subplots(
        1, 2, figsize=(11, 4.5), gridspec_kw=dict(width_ratios=[2, 1]))
    styles = {'dense': ('tab:blue', 'o', 'dense SSD300-BN, widths'),
              'fs': ('tab:red', 's', 'FS SSD300 (width 0.25), K3 x 0.5/1/2, '
                     'grid order'),
              'fs-wq': ('tab:orange', 'v', 'FS grid order, WQ (effective params)'),
              'fs-il': ('tab:green', 'D', 'FS, pred_interleave (the configs\' '
                        'default)'),
              'fs-il-wq': ('tab:olive', '^', 'FS pred_interleave, WQ (effective '
                           'params)'),
              'dfs': ('tab:purple', 'P', 'DFSNet, uniform start'),
              'dfs-wq': ('tab:pink', '*', 'DFSNet, WQ (effective params)'),
              'dfs-prior': ('tab:brown', 'X', 'DFSNet, grid prior 2 (the configs\')'),
              'dfs-prior-wq': ('tab:gray', 'p', 'DFSNet grid prior 2, WQ')}
    for curve, (color, marker, label) in styles.items():
        pts = sorted((r for r in rows if r['curve'] == curve),
                     key=lambda r: r['effective'])
        if pts:
            ax.errorbar([p['effective'] for p in pts],
                        [100 * p['mAP'] for p in pts],
                        yerr=[100 * p['std'] for p in pts], color=color,
                        marker=marker, capsize=3, label=label)
    for r in rows:
        if not r['curve']:
            ax.errorbar([r['effective']], [100 * r['mAP']],
                        yerr=[100 * r['std']], marker='x', color='gray',
                        capsize=3)
            ax.annotate(r['label'], (r['effective'], 100 * r['mAP']),
                        fontsize=6, xytext=(4, 3), textcoords='offset points')
    ax.set_xscale('log')
    ax.set_xlabel('(effective) parameters')
    ax.set_ylabel('mAP@0.5 (%), demo test split')
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3, which='both')
    ax.legend(fontsize=7)
    for name, (params, m) in PAPER_TABLE4.items():
        paper.scatter(params, m, color='tab:gray', marker='s')
        paper.annotate(name, (params, m), fontsize=7, xytext=(4, 2),
                       textcoords='offset points')
    paper.set_xscale('log')
    paper.set_xlabel('parameters')
    paper.set_ylabel('mAP (%), VOC2007 test')
    paper.set_title("The paper's Table 4 (VOC07+12, full width):\n"
                    'not our measurement, other data', fontsize=9)
    paper.grid(alpha=0.3, which='both')
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


# ------------------------------------------------------- comparison report
#: The comparison's methods in table order, with their colour and marker.
METHOD_STYLES = {
    'FS': ('tab:red', 's'), 'FS-WQ': ('tab:orange', 'v'),
    'dense': ('tab:blue', 'o'), 'dense int8': ('tab:cyan', '^'),
    'BSF': ('tab:purple', 'P'), 'KSE': ('tab:green', 'D'),
    'LRF': ('tab:brown', 'X'), 'LRF int8': ('tab:olive', '<'),
    'DFSNet': ('tab:pink', '*'),
    'DFSNet-WQ': ('tab:gray', 'p'),
}


def _method_rank(method: str) -> int:
    names = list(METHOD_STYLES)
    return names.index(method) if method in names else len(names)


def pareto_front(rows: List[dict], cost_key: str = 'bytes') -> List[str]:
    """Names of the rows no other row beats on (cost, mean mAP): none has a
    cost <= theirs and a higher mean mAP. Rows without the cost are left out."""
    known = [r for r in rows if r.get(cost_key) is not None]
    return [r['name'] for r in known
            if not any(o is not r and o[cost_key] <= r[cost_key]
                       and o['mAP'] > r['mAP'] for o in known)]


def clear_winners(rows: List[dict], ref: dict,
                  cost_key: str = 'bytes') -> List[dict]:
    """Rows at a cost <= ``ref``'s whose mean mAP is higher by more than one
    standard deviation (the larger of the two rows' std over seeds): the
    issue's test of FS-WQ's place on the bytes front."""
    return [o for o in rows if o is not ref and o.get(cost_key) is not None
            and o[cost_key] <= ref[cost_key]
            and o['mAP'] - ref['mAP'] > max(o['std'], ref['std'])]


def compare_table(rows: List[dict]) -> str:
    """The comparison: one row per method and size."""
    fronts = {key: set(pareto_front(rows, key)) for key in ('bytes', 'flops')}
    lines = ['| method | model | # params | effective params | checkpoint bytes '
             '| GFLOPs (300x300) | training iterations | s / iter '
             '| mAP@0.5 (mean +- std) | seeds | Pareto front |',
             '|---|---|---|---|---|---|---|---|---|---|---|']
    for r in sorted(rows, key=lambda r: (_method_rank(r['method']),
                                         r['method'], -r['bytes'])):
        speed = f'{r["s_iter"]:.2f}' if r['s_iter'] else '-'
        flops = f'{r["flops"] / 1e9:.3f}' if r.get('flops') is not None else '-'
        front = ', '.join(k if k == 'bytes' else 'FLOPs' for k in ('bytes', 'flops')
                          if r['name'] in fronts[k]) or '-'
        lines.append(
            f'| {r["method"]} | {r["label"]} | {r["params"]:,} | '
            f'{r["effective"]:,.0f} | {r["bytes"]:,} | {flops} | '
            f'{r["schedule"]} | {speed} | {r["mAP"]:.3f} +- {r["std"]:.3f} | '
            f'{r["seeds"]} | {front} |')
    return '\n'.join(lines)


def front_notes(rows: List[dict]) -> str:
    """Every FS-WQ row's place on the bytes-vs-mAP front, in words."""
    notes = []
    front = set(pareto_front(rows, 'bytes'))
    for ref in (r for r in rows if r['method'] == 'FS-WQ'):
        better = clear_winners(rows, ref, 'bytes')
        notes.append(
            f'{ref["label"]} ({ref["bytes"]:,} bytes, mAP {ref["mAP"]:.3f} +- '
            f'{ref["std"]:.3f}): '
            + ('on' if ref['name'] in front else 'not on')
            + ' the bytes-vs-mAP Pareto front; rows at <= its bytes with a '
            'mean mAP higher by more than one std: '
            + (', '.join(f'{o["label"]} ({o["bytes"]:,} bytes, {o["mAP"]:.3f} '
                         f'+- {o["std"]:.3f}, {_seeds(o)})' for o in better)
               or 'none')
            + '.' + _one_seed_caveat([ref] + better))
    return '\n'.join(notes)


def _seeds(row: dict) -> str:
    n = row.get('seeds', 1)
    return f'{n} seed{"s" if n != 1 else ""}'


def _one_seed_caveat(rows: List[dict]) -> str:
    """What the one-std test means when some of its rows have one seed (a
    std of 0: the test is then only as strict as the other row's spread)."""
    single = [r['label'] for r in rows if r.get('seeds', 1) < 2]
    return (f' One seed (std unknown, counted as 0): {", ".join(single)}.'
            if single else '')


COUNTING = (
    'Checkpoint bytes: the file a user ships: the float32 state dict (dense, '
    'FS, KSE with its packed index bits, LRF), tools/quantize.py\'s (FS-WQ), '
    'tools/quantize_int8.py\'s (int8), tools/compress_bsf.py\'s (BSF); each '
    'includes BatchNorm statistics and the zip framing. Effective parameters: '
    'float32-parameter equivalents (WQ and int8: a byte counts 1/4; BSF: '
    'stored bits / 32; KSE: parameters + index bits / 32). GFLOPs: one 300x300 '
    'image through backbone, neck and head, counted by mmengine.analysis as '
    'mmdet\'s get_flops.py counts them (a multiply-add is one; BatchNorm two '
    'per element; building FS, BSF or int8 weights counts nothing, so they '
    'count as the dense convs they run). s / iter: median training '
    'iteration (int8: its dense run\'s; KSE and LRF: their fine-tuning\'s). '
    'Pareto front: no other row has <= its bytes (FLOPs) and a higher mean '
    'mAP.')


def plot_compare(rows: List[dict], key: str, xlabel: str, out: str,
                 title: str) -> None:
    """mAP (mean +- std over seeds) against ``key`` (log x), a colour and a
    marker per method, the points of a method joined in order of x."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    methods = sorted({r['method'] for r in rows}, key=lambda m: (
        _method_rank(m), m))
    for method in methods:
        pts = sorted((r for r in rows if r['method'] == method
                      and r.get(key) is not None), key=lambda r: r[key])
        if not pts:
            continue
        color, marker = METHOD_STYLES.get(method, ('black', 'x'))
        ax.errorbar([p[key] for p in pts], [100 * p['mAP'] for p in pts],
                    yerr=[100 * p['std'] for p in pts], color=color,
                    marker=marker, capsize=3, linewidth=0.8, label=method)
        for p in pts:
            ax.annotate(p['name'], (p[key], 100 * p['mAP']), fontsize=6,
                        xytext=(4, 3), textcoords='offset points')
    ax.set_xscale('log')
    ax.set_xlabel(xlabel)
    ax.set_ylabel('mAP@0.5 (%), demo test split')
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3, which='both')
    ax.legend(fontsize=7, loc='center left', bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=110, format='png')
    plt.close(fig)


def write_report(docs: str, rows: List[dict], results: List[dict], *,
                 command: str, iters: int, seeds: List[int],
                 finetune_iters: int, compare: bool, report_only: bool,
                 elapsed: float) -> str:
    """Write the report of a benchmark invocation under ``docs``.

    ``results.md`` (:func:`table`, or with ``compare`` :func:`compare_table`,
    :func:`front_notes` and :data:`COUNTING`, then a footer with the command
    and the wall times), ``results.json`` (the command, the settings, the
    rows and every run) and ``params_vs_map.png`` (:func:`plot`), or with
    ``compare`` ``map_vs_bytes.png`` and ``map_vs_flops.png``
    (:func:`plot_compare`).

    Args:
        docs: the folder (made if missing).
        rows: :func:`summarize`'s rows.
        results: the runs' results.
        command: the command line that makes (or resumes) these runs.
        iters: training iterations of a run.
        seeds: the seeds asked for.
        finetune_iters: KSE / LRF fine-tuning iterations.
        compare: issue 22's comparison report.
        report_only: the table is written from the finished runs only.
        elapsed: this invocation's wall time so far (seconds).

    Returns:
        The text of ``results.md``.
    """
    os.makedirs(docs, exist_ok=True)
    runs_s = sum(r.get('wall_s', 0.0) for r in results)
    footer = (f'\n\nCommand: `{command.strip()}`; {iters} training '
              f'iterations of 8 images per run, seeds {seeds}; the '
              f'{len(results)} runs took {runs_s / 60:.0f} min of wall time in '
              f'all (train, test, quantize, test; results.json has each run\'s). '
              + ('Table written from the finished runs (--report-only).\n'
                 if report_only else
                 f'This invocation: {elapsed / 60:.1f} min (finished runs are '
                 f'skipped).\n'))
    counts = sorted({r['seeds'] for r in rows})
    title = (f'Measured on the demo data: {iters} iterations, batch 8, AdamW;\n'
             f'mean +- std over '
             + ('/'.join(map(str, counts)) if counts else '0') + ' seeds'
             + (' (the table gives each row\'s)' if len(counts) > 1 else ''))
    if compare:
        notes = front_notes(rows)
        text = (compare_table(rows) + '\n\n' + (notes + '\n\n' if notes else '')
                + COUNTING + f' KSE and LRF start from the trained dense '
                f'width-0.25 run of the same seed and fine-tune '
                f'{finetune_iters} iterations at the from-trained FS path\'s '
                f'schedule.' + footer)
    else:
        text = table(rows) + footer
    write_text_atomic(os.path.join(docs, 'results.md'), text)
    write_json_atomic(os.path.join(docs, 'results.json'), dict(
        command=command.strip(), iters=iters, seeds=seeds,
        finetune_iters=finetune_iters, rows=rows, runs=results))
    if compare:
        plot_compare(rows, 'bytes', 'checkpoint bytes (log)',
                     os.path.join(docs, 'map_vs_bytes.png'), title)
        plot_compare(rows, 'flops', 'FLOPs, one 300x300 image (log; '
                     'mmengine.analysis as get_flops.py)',
                     os.path.join(docs, 'map_vs_flops.png'), title)
    else:
        plot(rows, os.path.join(docs, 'params_vs_map.png'), title)
    return text
