"""The accuracy benchmark (``benchmarks/bench_accuracy.py``, its command
line), one job per module:

* ``variants``: the points (dense, FS, DFSNet, the experiments, issue 22's
  other compression methods), their methods and descriptions, the named
  sets (``--compare``, ``--quick``);
* ``configs``: a point's generated configs, the model they build, its
  parameter count and FLOPs, the dense widths matched to a parameter count;
* ``runner``: the runs of a point and seed (train, test, and the WQ, int8,
  BSF, KSE and LRF steps), resumable, and the loop over all of them;
* ``report``: summaries over seeds, the tables, the Pareto fronts, the
  plots and the files under ``--docs``.
"""
