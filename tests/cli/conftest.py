from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from ptsq.cli.main import app
from tests.models import SmallNet, randomize_bn

MODELS = Path(__file__).resolve().parents[1] / "models.py"


def spec(name: str) -> str:
    return f"{MODELS}:{name}"


@pytest.fixture(scope="session")
def small_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    p = tmp_path_factory.mktemp("weights") / "small.pth"
    torch.save(randomize_bn(SmallNet()).state_dict(), p)
    return p


class Result:
    def __init__(self, code: int, stdout: str, stderr: str) -> None:
        self.code, self.stdout, self.stderr = code, stdout, stderr


def run_cli(*args: str) -> Result:
    r = CliRunner().invoke(app, [str(a) for a in args])
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    return Result(r.exit_code, r.stdout, r.stderr)


def tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        h.update(str(p.relative_to(root)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def assert_clean_error(res: Result, *needles: str) -> None:
    """Exit 2, one error line naming the problem (plus an optional hint line), no traceback."""
    assert res.code == 2, (res.code, res.stdout, res.stderr)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 1, res.stderr
    assert all(ln.startswith(("error: ", "hint: ", "warning: ", "info: ")) for ln in lines), res.stderr
    assert "Traceback" not in res.stderr + res.stdout
    for n in needles:
        assert n.lower() in errors[0].lower(), (n, errors[0])
