"""The whole PEM model: backbone -> pixel decoder -> transformer decoder.

State-dict keys match the official detectron2 layout (``backbone.*``,
``sem_seg_head.pixel_decoder.*``, ``sem_seg_head.predictor.*``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pem.backbones import build_backbone
from pem.config import PEMConfig
from pem.inference import PanopticResult, panoptic_inference, semantic_inference
from pem.pixel_decoder import PixelDecoder
from pem.transformer_decoder import TransformerDecoder


class MaskFormerHead(nn.Module):
    """Pixel decoder + transformer decoder (official name ``sem_seg_head``)."""

    def __init__(self, cfg: PEMConfig):
        super().__init__()
        pd = cfg.pixel_decoder
        self.pixel_decoder = PixelDecoder(cfg.backbone.out_channels, pd.conv_dim, pd.mask_dim)
        self.predictor = TransformerDecoder(
            pd.conv_dim, pd.mask_dim, cfg.num_classes, cfg.transformer_decoder
        )

    def forward(self, features: dict[str, Tensor]) -> dict[str, object]:
        mask_features, multi_scale = self.pixel_decoder(features)
        return self.predictor(multi_scale, mask_features)


class PEM(nn.Module):
    """Prototype-based Efficient MaskFormer.

    ``forward`` takes normalised images (B, 3, H, W), H and W multiples of 32, and returns
    ``pred_logits`` (B, Q, K+1), ``pred_masks`` (B, Q, H/4, W/4) and ``aux_outputs``.
    Use :meth:`normalize` for 0-255 RGB input and :meth:`predict_semantic` /
    :meth:`predict_panoptic` for end-to-end inference.
    """

    def __init__(self, cfg: PEMConfig, head: nn.Module | None = None):
        super().__init__()
        self.config = cfg
        self.backbone = build_backbone(cfg.backbone)
        # ``head``: another ``sem_seg_head`` over the same backbone (baselines such as Mask2Former).
        self.sem_seg_head = head if head is not None else MaskFormerHead(cfg)
        self.register_buffer("pixel_mean", torch.tensor(cfg.pixel_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(cfg.pixel_std).view(1, 3, 1, 1), persistent=False)

    def normalize(self, images: Tensor) -> Tensor:
        """RGB 0-255 images (B, 3, H, W), any dtype -> normalised float (B, 3, H, W)."""
        return (images.to(self.pixel_mean.dtype) - self.pixel_mean) / self.pixel_std

    def forward(self, images: Tensor) -> dict[str, object]:
        h, w = images.shape[-2:]
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
        if not torch.compiler.is_compiling() and not isinstance(h, torch.SymInt) and (h % 32 or w % 32):
            raise ValueError(f"image size {h}x{w} is not a multiple of 32; pad or resize first")
        return self.sem_seg_head(self.backbone(images))

    def _pad(self, images: Tensor) -> Tensor:
        h, w = images.shape[-2:]
        pad_h, pad_w = (-h) % 32, (-w) % 32
        # Padding after normalisation is zero, like detectron2's ImageList.
        return F.pad(self.normalize(images), (0, pad_w, 0, pad_h))

    @torch.no_grad()
    def predict_semantic(self, images: Tensor) -> Tensor:
        """RGB 0-255 (B, 3, H, W) -> class scores (B, K, H, W) (argmax gives the label map)."""
        h, w = images.shape[-2:]
        out = self(self._pad(images))
        return semantic_inference(out["pred_logits"], out["pred_masks"], (h, w))

    @torch.no_grad()
    def predict_panoptic(self, images: Tensor) -> list[PanopticResult]:
        """RGB 0-255 (B, 3, H, W) -> per image panoptic id map (H, W) and segment list."""
        h, w = images.shape[-2:]
        out = self(self._pad(images))
        cfg = self.config
        results = []
        for logits, masks in zip(out["pred_logits"], out["pred_masks"]):
            masks = F.interpolate(masks[None], size=(h + (-h) % 32, w + (-w) % 32), mode="bilinear")[0]
            results.append(
                panoptic_inference(
                    logits,
                    masks[:, :h, :w],
                    cfg.thing_ids,
                    cfg.inference.object_mask_threshold,
                    cfg.inference.overlap_threshold,
                )
            )
        return results
