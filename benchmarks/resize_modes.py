"""``--resize stretch`` vs ``letterbox`` on frames of another aspect ratio than the model's.

The default model (``cityscapes-panoptic-tiny``, 256x512 = 1:2) is exported to FP32 ONNX (semantic
head) and run
through the runtime's ``Segmenter`` (what ``pem-deploy infer`` runs) on the 50 synthetic val
images turned into 16:9 and 4:3 frames in two ways, and scored with the project's mIoU
(``pem.evaluation.SemanticEvaluator``) against the ground truth turned the same way:

* ``crop``: a centre crop to the aspect ratio. Objects keep their proportions, as in a real
  16:9 or 4:3 camera of the same street: the honest case for a camera feed.
* ``resize``: the whole 1:2 image resized to the aspect ratio (what the issue asked for). The
  scene is then already squashed in the data, and ``stretch`` undoes exactly that squash, so it
  flatters ``stretch``; shown for completeness.

Usage: ``python benchmarks/resize_modes.py [--out DIR] [--limit N]`` (~1-2 min on 2 cores);
writes ``DIR/results.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ASPECTS = {"16:9": 16 / 9, "4:3": 4 / 3, "1:2 (native)": 2.0}


def reshape(image: np.ndarray, labels: np.ndarray, aspect: float, how: str) -> tuple[np.ndarray, np.ndarray]:
    """``image`` / ``labels`` as a frame of width / height ``aspect`` (crop or resize)."""
    h, w = labels.shape
    if how == "crop":
        new_w = min(w, round(h * aspect))
        new_h = min(h, round(new_w / aspect))
        top, left = (h - new_h) // 2, (w - new_w) // 2
        return image[top : top + new_h, left : left + new_w], labels[top : top + new_h, left : left + new_w]
    new_h = round(w / aspect)
    size = (w, new_h)
    return (
        cv2.resize(image, size, interpolation=cv2.INTER_LINEAR),
        cv2.resize(labels, size, interpolation=cv2.INTER_NEAREST),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(tempfile.mkdtemp(prefix="resize-modes-")))
    parser.add_argument("--limit", type=int, default=None, help="at most N val images")
    args = parser.parse_args()

    import torch

    from export.pipeline import ExportOptions, export_artifact
    from export.source import load_source
    from pem.data.cityscapes import CityscapesDataset
    from pem.evaluation import SemanticEvaluator
    from pem.zoo import default_dataset_path, ensure_default_checkpoint
    from runtime import Segmenter

    torch.set_num_threads(1)
    start = time.perf_counter()
    checkpoint = ensure_default_checkpoint()
    artifact = args.out / "fp32"
    if not (artifact / "model.onnx").is_file():
        # semantic head: labels from the semantic inference (the model's mIoU), no void pixels
        export_artifact(load_source(checkpoint=checkpoint), ExportOptions(out_dir=artifact, head="semantic"))
    dataset = CityscapesDataset(default_dataset_path(), "val", "semantic")
    count = len(dataset) if args.limit is None else min(args.limit, len(dataset))
    segmenters = {mode: Segmenter.open(artifact, resize=mode, threads=1) for mode in ("stretch", "letterbox")}
    classes = [c.name for c in segmenters["stretch"].artifact.classes]
    evaluators = {
        (how, aspect, mode): SemanticEvaluator(classes)
        for how in ("crop", "resize")
        for aspect in ASPECTS
        for mode in segmenters
    }
    for index in range(count):
        sample = dataset[index]
        bgr = np.ascontiguousarray(sample.image[..., ::-1])
        for how, aspect, mode in evaluators:
            if aspect.endswith("(native)") and how == "resize":
                continue  # same frames as the native crop
            image, labels = reshape(bgr, sample.sem_seg, ASPECTS[aspect], how)
            prediction = segmenters[mode].predict(np.ascontiguousarray(image)).labels
            evaluators[(how, aspect, mode)].update(prediction, labels)
    rows = []
    for (how, aspect, mode), evaluator in evaluators.items():
        if evaluator.confusion.sum() == 0:
            continue
        metrics = evaluator.compute()
        rows.append({"frames": how, "aspect": aspect, "resize": mode, "mIoU": round(100 * metrics.miou, 2)})
    results = {
        "model": str(checkpoint),
        "images": count,
        "rows": rows,
        "seconds": round(time.perf_counter() - start, 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print("| frames | aspect | stretch mIoU | letterbox mIoU | letterbox - stretch |")
    print("|---|---|---|---|---|")
    table = {(r["frames"], r["aspect"], r["resize"]): r["mIoU"] for r in rows}
    for how in ("crop", "resize"):
        for aspect in ASPECTS:
            if (how, aspect, "stretch") not in table:
                continue
            s, lb = table[(how, aspect, "stretch")], table[(how, aspect, "letterbox")]
            print(f"| {how} | {aspect} | {s:.2f} | {lb:.2f} | {lb - s:+.2f} |")
    print(f"({count} val images, {results['seconds']} s; results in {args.out / 'results.json'})")


if __name__ == "__main__":
    main()
