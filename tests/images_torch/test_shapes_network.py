"""The numpy network that serves the default image model computes what the torch network it was trained as
computes (scripts/train_image_model.py), on random weights where no layer is left at its zero initialisation."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")


def test_numpy_and_torch_agree() -> None:
    sys.path.insert(0, str(Path(__file__).parents[2] / "scripts"))
    try:
        import train_image_model as trainer
    finally:
        sys.path.pop(0)
    tokenizer = trainer.Tokenizer(trainer.scenes.vocabulary(), trainer.MAX_TOKENS)
    torch.manual_seed(0)
    model = trainer.ShapesModel(len(tokenizer.words))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    assert trainer.check_numpy_agrees(model, tokenizer) < 1e-4
