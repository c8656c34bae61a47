"""tools/count_params.py's table: every number is count_params'."""
from torch import nn

from fsnet_mmdet import FSConv, count_params
from fsnet_mmdet.tools.count_params import format_table


def test_table_rows_and_totals_are_the_counts():
    model = nn.Sequential(FSConv(16, 32, 3, bias=False), nn.BatchNorm2d(32),
                          nn.Conv2d(32, 4, 1))
    summary = model[0].summary.numel()
    stored = summary + 64 + 132  # summary, BN's weight and bias, the 1x1
    text = format_table(count_params(model))
    rows = {line.split()[0]: line.split()[1:] for line in text.splitlines()
            if line[:1].isalnum()}
    assert rows['0'] == [f'{32 * 16 * 9:,}', f'{summary:,}',
                         f'{32 * 16 * 9 / summary:.2f}']
    assert rows['2'] == ['132', '132', '1.00']
    assert f'stored bits {32 * stored:,} (effective: bits / 32 = ' \
        f'{stored / 1e6:.2f}M)' in text
    assert f'stored {stored / 1e6:.2f}M' in text
