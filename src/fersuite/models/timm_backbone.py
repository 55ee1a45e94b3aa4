"""Any timm model as a backbone with the joint affect head."""

from __future__ import annotations

import timm
import torch
from torch import nn

from fersuite.errors import PretrainedWeightsError
from fersuite.models.heads import JointHead
from fersuite.models.weights import require_local_weights
from fersuite.types import AffectOutput, InputSpec

#: timm families whose attention biases are sized for one input resolution.
FIXED_INPUT_SIZE: dict[str, int] = {"efficientformer_": 224}


def check_input_size(name: str, input_size: int) -> None:
    """Fail early for architectures that only run at one resolution."""
    for prefix, size in FIXED_INPUT_SIZE.items():
        if (
            name.startswith(prefix)
            and not name.startswith("efficientformerv2")
            and input_size != size
        ):
            raise ValueError(
                f"model.name={name} runs at {size}x{size} only (its attention biases are sized "
                f"for that input); got model.input_size={input_size}"
            )


class TimmAffectNet(nn.Module):
    """A timm backbone (classifier removed) + :class:`JointHead`.

    ``forward_features`` returns the backbone's unpooled features (reused for distillation
    hints); ``forward_head`` pools them and applies the joint head.
    """

    def __init__(
        self,
        name: str = "mobilenetv2_100",
        num_classes: int = 8,
        in_chans: int = 1,
        input_size: int = 48,
        pretrained: bool = False,
        pretrained_path: str | None = None,
        drop_rate: float = 0.0,
        drop_path_rate: float | None = None,
        mean: tuple[float, ...] | None = None,
        std: tuple[float, ...] | None = None,
    ) -> None:
        super().__init__()
        if name not in timm.list_models():
            raise ValueError(
                f"model.name={name!r} is not a timm model (see timm.list_models(); e.g. "
                "mobilenetv2_100, resnet18, efficientnet_b0, efficientformer_l1)"
            )
        check_input_size(name, input_size)
        pretrained = pretrained or bool(pretrained_path)
        require_local_weights(pretrained, pretrained_path, f"model.name={name}")
        kwargs: dict[str, object] = {"num_classes": 0, "in_chans": in_chans}
        if drop_path_rate is not None:
            kwargs["drop_path_rate"] = drop_path_rate
        if pretrained:
            kwargs["pretrained_cfg_overlay"] = {"file": str(pretrained_path)}
        try:
            self.backbone = timm.create_model(name, pretrained=pretrained, **kwargs)
        except FileNotFoundError as exc:
            raise PretrainedWeightsError(f"model.pretrained_path={pretrained_path}: {exc}") from exc
        self.name = name
        self.num_classes = num_classes
        # The pooled (pre-logits) width: larger than num_features for models with a
        # pre-logits conv head (e.g. MobileNetV3).
        hidden = getattr(self.backbone, "head_hidden_size", None)
        self.num_features = int(hidden or self.backbone.num_features)
        self.head = JointHead(self.num_features, num_classes, dropout=drop_rate)
        m = tuple(mean) if mean is not None else (0.5,) * in_chans
        s = tuple(std) if std is not None else (0.5,) * in_chans
        self.input_spec = InputSpec(size=input_size, channels=in_chans, mean=m, std=s)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_features(x)  # type: ignore[no-any-return]

    def forward_head(
        self, feats: torch.Tensor, pre_logits: bool = False
    ) -> torch.Tensor | AffectOutput:
        pooled = self.backbone.forward_head(feats, pre_logits=True)
        return pooled if pre_logits else self.head(pooled)

    def forward(self, x: torch.Tensor) -> AffectOutput:
        out = self.forward_head(self.forward_features(x))
        assert isinstance(out, AffectOutput)
        return out
