"""Draw one filter summary and the overlapping filters cut from it (docs/summary.png).

The layer is the paper's worked example (Sec. 2): 64 filters of 64 x 3 x 3
on 64 channels, whose summary is 64 x 8 x 8 (sampling numbers 4 x 4 x 4,
strides x = y = 2, z = 16). Every cell and span in the picture comes from the
package's own geometry (``resolve_geometry``, ``filter_index``,
``multiplicity``), not from hand-drawn coordinates:

* left: the summary's 8 x 8 spatial plane with four of the 16 spatial filter
  positions (K1 x K2 = 4 x 4) outlined; neighbours share a row or a column,
  and the last one wraps around the borders (the paper's appended copy);
* middle: how many filter elements read each element of that plane (the
  Eq. 2 denominator, channel 0 of the summary);
* right: the channel axis: the K3 = 4 filters along it start z = 16
  channels apart and each reads all 64 channels, wrapping around.

    python docs/draw_summary.py                 # writes docs/summary.png
    python docs/draw_summary.py --out other.png
"""
import argparse
import os
from typing import List, Set, Tuple

from fsnet_mmdet.utils.io import save_figure_atomic
from fsnet_mmdet.layers.geometry import FSGeometry, resolve_geometry
from fsnet_mmdet.layers.index import filter_index, multiplicity

HERE = os.path.dirname(os.path.abspath(__file__))
#: (k1, k2) grid positions drawn on the spatial plane, with their colours.
SHOWN = (((0, 0), '#1f77b4'), ((0, 1), '#ff7f0e'), ((1, 1), '#2ca02c'),
         ((3, 3), '#d62728'))


def worked_example() -> FSGeometry:
    """The paper's example layer: 64 filters of 64 x 3 x 3."""
    return resolve_geometry(64, 64, (3, 3))


def spatial_cells(geometry: FSGeometry, k1: int, k2: int) -> Set[Tuple[int, int]]:
    """Summary rows and columns read by the filter at grid position (k1, k2).

    Args:
        geometry: the layer (``interleave`` 1: output channel k is grid filter k).
        k1: position along the summary's height, 0 <= k1 < K1.
        k2: position along its width, 0 <= k2 < K2.

    Returns:
        The (row, column) of every summary element that channel 0 of filter
        (k1, k2, k3 = 0) reads: S1 x S2 cells, wrapped at the borders.
    """
    _, k2_count, k3_count = geometry.sampling
    _, hm, wm = geometry.summary_shape
    k = (k1 * k2_count + k2) * k3_count  # output channel of (k1, k2, 0)
    flat = filter_index(geometry)[k, 0].reshape(-1).tolist()  # (S1 * S2,)
    return {divmod(i % (hm * wm), wm) for i in flat}


def channel_spans(geometry: FSGeometry) -> List[List[Tuple[int, int]]]:
    """Summary channels read by each filter along the channel axis.

    Returns:
        For k3 = 0 .. K3 - 1, the (start, length) runs of summary channels
        that filter (0, 0, k3) reads, in the order its channels 0 .. C - 1
        read them: one run, or two where the filter wraps past the last
        summary channel (the second run then starts at channel 0).
    """
    _, hm, wm = geometry.summary_shape
    index = filter_index(geometry)
    spans = []
    for k3 in range(geometry.sampling[2]):
        channels = [i // (hm * wm) for i in index[k3, :, 0, 0].tolist()]
        runs, start = [], channels[0]
        for prev, cur in zip(channels, channels[1:] + [None]):
            if cur != prev + 1:
                runs.append((start, prev - start + 1))
                start = cur
        spans.append(runs)
    return spans


def draw(out: str) -> None:
    """Draw the three panels and write the PNG atomically to ``out``."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    g = worked_example()
    cm, hm, wm = g.summary_shape
    (k1s, k2s, k3s), (x, y, z) = g.sampling, g.strides
    dense = g.num_filters * g.in_channels * g.kernel_size[0] * g.kernel_size[1]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.3),
                             gridspec_kw=dict(width_ratios=[1, 1, 1.25]))

    ax = axes[0]
    for (k1, k2), colour in SHOWN:
        for row, col in spatial_cells(g, k1, k2):
            ax.add_patch(Rectangle((col, row), 1, 1, facecolor=colour,
                                   alpha=0.28, edgecolor=colour, lw=2))
        ax.text(k2 * y + 0.12, k1 * x + 0.35, f'({k1},{k2})', color=colour,
                fontsize=9, fontweight='bold')
    ax.set_title(f'summary, spatial plane ({hm} x {wm}):\n'
                 f'four of the {k1s} x {k2s} filter positions, '
                 f'3 x 3 each, stride {x}', fontsize=10)

    ax = axes[1]
    counts = multiplicity(filter_index(g), cm * hm * wm).view(cm, hm, wm)[0]
    ax.imshow(counts.numpy(), cmap='Greys', vmin=0, vmax=2 * int(counts.max()),
              extent=(0, wm, hm, 0))
    for row in range(hm):
        for col in range(wm):
            ax.text(col + 0.5, row + 0.5, str(int(counts[row, col])),
                    ha='center', va='center', fontsize=9)
    ax.set_title('filter elements reading each summary element\n'
                 '(channel 0; Eq. 2 averages their gradients)', fontsize=10)

    for ax in axes[:2]:
        ax.set_xlim(0, wm), ax.set_ylim(hm, 0), ax.set_aspect('equal')
        ax.set_xticks(range(wm + 1)), ax.set_yticks(range(hm + 1))
        ax.grid(True, color='0.6', lw=0.6)
        ax.tick_params(labelbottom=False, labelleft=False, length=0)

    ax = axes[2]
    colours = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728']
    for k3, runs in enumerate(channel_spans(g)):
        for i, run in enumerate(runs):  # the second run is the wrapped part
            ax.broken_barh([run], (k3 - 0.35, 0.7), facecolors=colours[k3 % 4],
                           alpha=0.6 if i == 0 else 0.3,
                           hatch=None if i == 0 else '//', edgecolor='white')
        ax.text(cm + 2, k3, f'k3 = {k3}: channels {k3 * z}..{cm - 1}'
                + (f', then 0..{k3 * z - 1}' if k3 else ''), va='center',
                fontsize=9)
    ax.set_xlim(0, cm + 40), ax.set_ylim(k3s - 0.5, -0.5)
    ax.set_xticks(range(0, cm + 1, z)), ax.set_yticks([])
    ax.axvline(cm, color='0.3', lw=1)
    ax.set_xlabel('summary channel')
    ax.set_title(f'channel axis: K3 = {k3s} filters, z = {z} apart,\n'
                 f'each reads all {g.in_channels} channels (hatched: wrapped)',
                 fontsize=10)

    fig.suptitle(f'One FSConv layer: {g.num_filters} filters of '
                 f'{g.in_channels} x 3 x 3 ({dense:,} weights) cut from one '
                 f'{cm} x {hm} x {wm} summary ({cm * hm * wm:,}): '
                 f'{g.ratio:g}x fewer parameters', fontsize=12)
    fig.tight_layout()
    save_figure_atomic(fig, out, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', default=os.path.join(HERE, 'summary.png'),
                        help='PNG to write (default: docs/summary.png)')
    args = parser.parse_args()
    draw(args.out)
    print(f'wrote {args.out}')


if __name__ == '__main__':
    main()
