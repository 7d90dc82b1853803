"""docs/isa.md's "Writing a program by hand": the whole script runs as printed (golden and Verilator runs)."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _section():
    return (ROOT / "docs" / "isa.md").read_text().split("## Writing a program by hand", 1)[1].split("\n## ", 1)[0]


def test_doc_script_runs_and_matches_the_listed_program(tmp_path):
    section = _section()
    listing = re.search(r"```\n(.*?)```", section, re.S).group(1)
    script = re.search(r"```python\n(.*?)```", section, re.S)
    assert script, "docs/isa.md lost the runnable script of its hand-written program"
    script = script.group(1)
    assert "..." not in script, "the script must be whole"
    embedded = re.search(r'PROGRAM = """\n(.*?)"""', script, re.S).group(1)
    assert embedded == listing, "the script's PROGRAM differs from the listing above it"
    path = tmp_path / "script.py"
    path.write_text(script)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, str(path)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, f"the script failed:\n{done.stdout}\n{done.stderr}"
    assert re.search(r"C = \[\[.*\]\]: golden and Verilator equal the NumPy reference; \d+ cycles", done.stdout), \
        done.stdout
