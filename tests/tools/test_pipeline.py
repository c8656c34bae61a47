"""tools/pipeline.run_script: a script forked from the starter behaves as
``python script args`` would (exit code, argv, output, working directory,
errors, timeout)."""
import os
import subprocess
import sys

import pytest

from conftest import ROOT
from fsnet_mmdet.tools.pipeline import run_script

SCRIPT = '''
import os, sys
print('argv', sys.argv[1:], 'cwd', os.getcwd())
print('comm', open('/proc/self/comm').read().strip(), file=sys.stderr)
if sys.argv[1] == 'raise':
    raise ValueError('boom')
if sys.argv[1] == 'sleep':
    import time; time.sleep(60)
sys.exit(int(sys.argv[1]))
'''


@pytest.mark.parametrize('code', [0, 3])
def test_exit_code_argv_output_and_cwd(tmp_path, code):
    script = tmp_path / 'probe_tool.py'
    script.write_text(SCRIPT)
    out, err = tmp_path / 'out', tmp_path / 'err'
    assert run_script(str(script), code, 'x y', stdout=str(out), stderr=str(err)) == code
    plain = subprocess.run([sys.executable, str(script), str(code), 'x y'],
                           cwd=ROOT, capture_output=True, text=True)
    assert plain.returncode == code
    assert out.read_text() == plain.stdout == f"argv ['{code}', 'x y'] cwd {ROOT}\n"
    if sys.platform.startswith('linux'):
        assert err.read_text() == 'comm probe_tool.py\n'


def test_an_exception_prints_its_traceback_and_exits_1(tmp_path):
    script = tmp_path / 'probe.py'
    script.write_text(SCRIPT)
    log = tmp_path / 'log'
    assert run_script(str(script), 'raise', stdout=str(log), stderr=str(log)) == 1
    assert 'Traceback' in log.read_text() and 'ValueError: boom' in log.read_text()


def test_timeout_kills_the_script(tmp_path):
    script = tmp_path / 'probe.py'
    script.write_text(SCRIPT)
    with pytest.raises(subprocess.TimeoutExpired):
        run_script(str(script), 'sleep', stdout=os.devnull, stderr=os.devnull,
                   timeout=1)
    # The starter serves the next script.
    assert run_script(str(script), 0, stdout=os.devnull, stderr=os.devnull) == 0
