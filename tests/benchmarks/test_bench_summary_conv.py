"""benchmarks/bench_summary_conv.py --quick, in process: one table row per
shape, and its 'auto' column is choose_compute's answer."""
from benchmarks.bench_summary_conv import HEADER, QUICK_LAYERS, main
from fsnet_mmdet import FSConv
from fsnet_mmdet.layers.summary_conv import choose_compute


def test_quick_table_has_every_row_and_the_auto_choice(capsys):
    rows = main(['--quick'])
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert HEADER in lines
    table = lines[lines.index(HEADER) + 2:]
    assert len(table) == len(rows) == len(QUICK_LAYERS)
    choices = []
    for layer, line in zip(QUICK_LAYERS, table):
        assert line.startswith(layer.name)
        fs = FSConv(layer.cin, layer.cout, layer.kernel, layer.stride,
                    layer.padding, layer.dilation)
        shape = (1, layer.cin, layer.size, layer.size)
        expected = [choose_compute(fs.geometry, layer.stride, layer.dilation,
                                   shape, 'cpu', training) for training in (False, True)]
        assert line.split()[-2:] == expected
        choices += expected
        # Every timing is a positive number of milliseconds.
        row = rows[len(choices) // 2 - 1]
        assert all(v > 0 for part in ('fwd', 'step') for v in row[part].values())
        assert row['macs']['dense'] > 0 and row['macs']['summary'] > 0
    assert set(choices) == {'filters', 'summary'}  # both answers exercised
