"""The pattern corpus: ptsq quantizes every pattern, saves and reloads it exactly, leaves the model and
its inputs alone, and is never more than 1 dB below the plain torch.ao FX recipe where that recipe works.

Runs at one thread (these models are tiny: more threads only add scheduling noise on a shared machine)
with a private speed-guard cache, so the patterns that time their layers measure afresh.
"""

from __future__ import annotations

import pytest

from tests.patterns.catalogue import PATTERNS
from tests.patterns.runner import run

pytestmark = pytest.mark.torch_ao  # each pattern is compared with the plain torch.ao FX recipe

MAX_BELOW_PLAIN_DB = 1.0


@pytest.fixture(scope="module", autouse=True)
def private_cache(one_thread, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    mp = pytest.MonkeyPatch()
    mp.setenv("PTSQ_CACHE_DIR", str(tmp_path_factory.mktemp("ptsq-cache")))
    yield
    mp.undo()


def test_the_corpus_is_broad() -> None:
    names = [p.name for p in PATTERNS]
    assert len(names) >= 40 and len(set(names)) == len(names)
    assert sum(p.speed_guard for p in PATTERNS) >= 3  # the speed guard stays on somewhere


@pytest.mark.parametrize("pattern", PATTERNS, ids=lambda p: p.name)
def test_pattern(pattern) -> None:  # type: ignore[no-untyped-def]
    r = run(pattern)
    ours, plain = r["ptsq"], r["plain"]
    assert ours["ok"], f"ptsq failed at {ours.get('stage')}: {ours.get('error')}\n{ours.get('trace', '')}"
    assert ours["reload_identical"], "the reloaded artifact differs from the in-memory int8 model"
    assert r["model_and_inputs_unchanged"], "quantizing changed the model or its input batches"
    if plain["ok"]:
        assert ours["sqnr_db"] >= plain["sqnr_db"] - MAX_BELOW_PLAIN_DB, (ours["sqnr_db"], plain["sqnr_db"])
