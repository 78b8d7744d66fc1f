"""The README's Python API example runs as written."""

from __future__ import annotations

import contextlib
import io
import os
import re
from pathlib import Path

ROOT = Path(__file__).parents[2]


def test_the_python_api_example_runs():
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## The Python API"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    out = io.StringIO()
    cwd = os.getcwd()
    os.chdir(ROOT)  # the example names the shipped config by its path from the root
    try:
        with contextlib.redirect_stdout(out):
            exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
    finally:
        os.chdir(cwd)
    assert re.match(r"-?\d+\.\d\d paid; voltages 0\.\d{3} to 1\.\d{3} p\.u\.; converged: "
                    r"True\n$", out.getvalue()), out.getvalue()
