"""The joint expression / valence / arousal head shared by the zoo."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from fersuite.labels import canonical_name, class_index_map
from fersuite.types import AffectOutput


class JointHead(nn.Module):
    """Pooled features (B, F) -> :class:`AffectOutput`.

    One linear layer predicts ``num_classes`` expression logits and two values squashed
    by ``tanh`` into [-1, 1] for valence and arousal.
    """

    def __init__(self, in_features: int, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        if in_features <= 0 or num_classes <= 0:
            raise ValueError(
                "JointHead needs positive in_features and num_classes, "
                f"got {in_features}, {num_classes}"
            )
        self.num_classes = num_classes
        self.in_features = in_features
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(in_features, num_classes + 2)

    def forward(self, features: torch.Tensor) -> AffectOutput:
        out = self.fc(self.dropout(features))
        va = torch.tanh(out[:, self.num_classes :])
        return AffectOutput(out[:, : self.num_classes], va[:, 0], va[:, 1])


class ClassRemap(nn.Module):
    """Wraps a trained network so its expression logits follow another class order.

    Valence and arousal pass through unchanged. ``num_classes`` is the dataset's.
    """

    def __init__(
        self, net: nn.Module, model_classes: Sequence[str], data_classes: Sequence[str]
    ) -> None:
        super().__init__()
        self.net = net
        self.model_classes = tuple(canonical_name(n) for n in model_classes)
        self.data_classes = tuple(data_classes)
        self.register_buffer(
            "index", torch.tensor(class_index_map(model_classes, data_classes)), persistent=False
        )
        self.num_classes = len(self.data_classes)

    def forward(self, x: torch.Tensor) -> AffectOutput:
        out: Any = self.net(x)
        return AffectOutput(out.expression.index_select(1, self.index), out.valence, out.arousal)
