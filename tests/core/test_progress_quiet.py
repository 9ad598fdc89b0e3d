"""Progress bars only on a terminal unless asked; native stderr captured away from the user."""
import os
import subprocess
import sys

import pytest

from deepsci.core.progress import enabled


@pytest.mark.parametrize("value,tty,expected", [("0", True, False), ("off", True, False),
                                                 ("on", False, True), ("1", False, True),
                                                 ("auto", True, True), ("auto", False, False)])
def test_progress_setting(monkeypatch, value, tty, expected):
    monkeypatch.setenv("DEEPSCI_PROGRESS", value)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: tty, raising=False)
    assert enabled() is expected


def test_native_stderr_goes_to_the_log_and_python_stderr_stays(tmp_path):
    code = (
        "import os, sys\n"
        "from deepsci.core.logs import capture_native_stderr, native_log\n"
        "with capture_native_stderr() as log:\n"
        "    os.write(2, b'I0000 native chatter\\n')\n"
        "    print('error: a user message', file=sys.stderr)\n"
        "    sys.stdout.write(open(log).read())\n"
        "print('after', native_log())\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert r.returncode == 0, r.stderr
    assert r.stderr == "error: a user message\n"
    assert r.stdout.splitlines() == ["I0000 native chatter", "after None"]
