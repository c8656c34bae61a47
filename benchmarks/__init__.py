"""The benchmarks: command-line scripts (``python benchmarks/<name>.py``),
and the packages their tests import (``benchmarks.accuracy``)."""
