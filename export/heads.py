"""Export wrappers: optional in-graph preprocessing, the raw model and the post-processing heads.

The exported graph is ``post(raw(preprocess(images)))``. The pieces are separate modules because the
pipeline exports the raw part and the post-processing separately and joins the two ONNX graphs (so
that the FP16 converter knows exactly where post-processing starts: it stays FP32).

Heads (output names, shapes and dtypes are listed in :data:`HEAD_OUTPUTS`):

* ``raw``: ``pred_logits`` (B, Q, K+1) and ``pred_masks`` (B, Q, H/4, W/4), the model's own outputs.
* ``semantic``: ``labels`` (B, H, W) int32, the official semantic post-processing: masks upsampled
  bilinearly to the input size, ``softmax(class)[..., :-1]`` x ``sigmoid(mask)`` summed over queries,
  argmax over classes.
* ``panoptic``: what Mask2Former's panoptic fusion needs, reduced in-graph; the remaining
  per-segment bookkeeping is a few numpy lines (:func:`runtime.core.postprocess.fuse_panoptic`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contract.vocabulary import HEADS, PREPROCESS_MODES
from pem.config import PEMConfig

INPUT_NAME = "images"
RAW_OUTPUTS = ("pred_logits", "pred_masks")


@dataclass(frozen=True)
class OutputSpec:
    """One graph output: name, dtype (numpy name), shape template and meaning.

    Shape entries are ints or symbols: ``B`` batch, ``Q`` queries, ``K`` classes, ``H``/``W`` the
    input height/width; ``H/4`` etc. are exact because H and W are multiples of 32.
    """

    name: str
    dtype: str
    shape: tuple[str, ...]
    meaning: str


HEAD_OUTPUTS: dict[str, tuple[OutputSpec, ...]] = {
    "raw": (
        OutputSpec(
            "pred_logits",
            "float32",
            ("B", "Q", "K+1"),
            "class logits per query; the last class (index K) is 'no object'",
        ),
        OutputSpec(
            "pred_masks",
            "float32",
            ("B", "Q", "H/4", "W/4"),
            "mask logits per query at 1/4 of the input resolution",
        ),
    ),
    "semantic": (
        OutputSpec(
            "labels",
            "int32",
            ("B", "H", "W"),
            "class id per pixel: argmax_k sum_q softmax(logits_q)[k] * sigmoid(upsampled mask_q)",
        ),
    ),
    "panoptic": (
        OutputSpec(
            "scores",
            "float32",
            ("B", "Q"),
            "max over the K+1 classes of softmax(logits_q)",
        ),
        OutputSpec(
            "classes",
            "int32",
            ("B", "Q"),
            "argmax over the K+1 classes of softmax(logits_q); K means 'no object'",
        ),
        OutputSpec(
            "owner",
            "int32",
            ("B", "H", "W"),
            "per pixel, the query index q maximising scores_q * sigmoid(mask_q) among kept queries "
            "(kept: classes_q != K and scores_q > object_mask_threshold); 0 everywhere when none is kept",
        ),
        OutputSpec(
            "owner_fg",
            "uint8",
            ("B", "H", "W"),
            "1 where sigmoid(mask of the owner) >= 0.5, else 0",
        ),
        OutputSpec(
            "mask_area",
            "int32",
            ("B", "Q"),
            "per query, the number of pixels with sigmoid(mask_q) >= 0.5",
        ),
    ),
}


def output_names(head: str) -> tuple[str, ...]:
    """Graph output names of ``head``, in order."""
    return tuple(spec.name for spec in HEAD_OUTPUTS[head])


class InputPreprocess(nn.Module):
    """In-graph preprocessing of RGB images (B, 3, H, W).

    ``none``: the input is already normalised float32, passed through. ``normalize``: float32
    0-255 input, ``(x - mean) / std`` in the graph. ``uint8``: uint8 0-255 input, cast to float32 and
    normalised in the graph. The arithmetic is exactly :meth:`pem.model.PEM.normalize`.
    """

    def __init__(self, mode: str, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        if mode not in PREPROCESS_MODES:
            raise ValueError(f"preprocess must be one of {PREPROCESS_MODES}, got {mode!r}")
        self.mode = mode
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, images: Tensor) -> Tensor:
        if self.mode == "none":
            return images
        return (images.to(torch.float32) - self.mean) / self.std


class RawModel(nn.Module):
    """Preprocessing + PEM: images -> (pred_logits (B, Q, K+1), pred_masks (B, Q, H/4, W/4))."""

    def __init__(self, model: nn.Module, preprocess: str = "none"):
        super().__init__()
        cfg: PEMConfig = model.config  # type: ignore[assignment]
        self.model = model
        self.preprocess = InputPreprocess(preprocess, cfg.pixel_mean, cfg.pixel_std)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        out = self.model(self.preprocess(images))
        return out["pred_logits"], out["pred_masks"]


def upsample_mask_probs(pred_masks: Tensor) -> Tensor:
    """(B, Q, h, w) mask logits -> (B, Q, 4h, 4w) probabilities, as the official post-processing."""
    size = (pred_masks.shape[-2] * 4, pred_masks.shape[-1] * 4)
    return F.interpolate(pred_masks, size=size, mode="bilinear", align_corners=False).sigmoid()


class SemanticPostprocess(nn.Module):
    """(pred_logits, pred_masks) -> labels (B, H, W) int32 (argmax of the official class scores)."""

    def forward(self, pred_logits: Tensor, pred_masks: Tensor) -> Tensor:
        probs = pred_logits.softmax(dim=-1)[..., :-1]  # (B, Q, K)
        masks = upsample_mask_probs(pred_masks)  # (B, Q, H, W)
        # sum_q probs[b, q, k] * masks[b, q, h, w] as a batched MatMul (portable; no Einsum).
        scores = torch.matmul(probs.transpose(1, 2), masks.flatten(2))  # (B, K, H*W)
        labels = scores.argmax(dim=1).to(torch.int32)  # (B, H*W)
        return labels.reshape(masks.shape[0], masks.shape[2], masks.shape[3])


class PanopticPostprocess(nn.Module):
    """(pred_logits, pred_masks) -> scores, classes, owner, owner_fg, mask_area (see HEAD_OUTPUTS).

    Reproduces the per-pixel part of :func:`pem.inference.panoptic_inference` exactly: the owner is
    the argmax over kept queries of ``score * sigmoid(mask)`` (first index on ties, as torch), written
    as an argmax over all queries where non-kept ones are set to -1 (every kept product is >= 0).
    """

    def __init__(self, num_classes: int, object_mask_threshold: float):
        super().__init__()
        self.num_classes = num_classes
        self.object_mask_threshold = float(object_mask_threshold)

    def forward(
        self, pred_logits: Tensor, pred_masks: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        scores, classes = pred_logits.softmax(dim=-1).max(dim=-1)  # (B, Q)
        keep = (classes != self.num_classes) & (scores > self.object_mask_threshold)
        masks = upsample_mask_probs(pred_masks)  # (B, Q, H, W)
        weighted = torch.where(keep[:, :, None, None], scores[:, :, None, None] * masks, -1.0)
        owner = weighted.argmax(dim=1)  # (B, H, W)
        owner_prob = torch.gather(masks, 1, owner.unsqueeze(1)).squeeze(1)
        owner_fg = (owner_prob >= 0.5).to(torch.uint8)
        # Counted in float32 (exact up to 2**24 pixels): TensorRT reduces float tensors everywhere.
        mask_area = (masks >= 0.5).to(torch.float32).sum(dim=(2, 3))
        return (
            scores,
            classes.to(torch.int32),
            owner.to(torch.int32),
            owner_fg,
            mask_area.to(torch.int32),
        )


def build_postprocess(head: str, config: PEMConfig) -> nn.Module | None:
    """The post-processing module of ``head`` (``None`` for ``raw``)."""
    if head == "raw":
        return None
    if head == "semantic":
        return SemanticPostprocess().eval()
    if head == "panoptic":
        return PanopticPostprocess(config.num_classes, config.inference.object_mask_threshold).eval()
    raise ValueError(f"head must be one of {HEADS}, got {head!r}")


class ExportedModel(nn.Module):
    """The whole exported computation in PyTorch: the reference that parity checks compare with.

    ``forward(images)`` returns a tuple of outputs in the order of ``HEAD_OUTPUTS[head]``.
    """

    def __init__(self, model: nn.Module, head: str = "raw", preprocess: str = "none"):
        super().__init__()
        self.head = head
        self.raw = RawModel(model, preprocess)
        self.post = build_postprocess(head, model.config)  # type: ignore[arg-type]

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        logits, masks = self.raw(images)
        if self.post is None:
            return (logits, masks)
        out = self.post(logits, masks)
        return out if isinstance(out, tuple) else (out,)
