"""Ray is optional and heavy: nothing imports it unless --ray (ray=) is given."""

import subprocess
import sys

CODE = """
import sys
from typer.testing import CliRunner
import ptsq
from ptsq.cli.main import app
top = CliRunner().invoke(app, ["--help"])
sub = {c: CliRunner().invoke(app, [c, "--help"]).stdout for c in ("eval", "analyze", "quantize")}
assert top.exit_code == 0 and all("--ray" in text and "--workers" in text for text in sub.values()), sub
import ptsq.evaluation, ptsq.analysis.sensitivity, ptsq.analysis.budget, ptsq.api
print(sorted(m for m in sys.modules if m == "ray" or m.startswith("ray.")))
"""


def test_help_and_imports_do_not_import_ray():
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]", out
