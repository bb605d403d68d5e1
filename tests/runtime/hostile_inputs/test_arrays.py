"""Hostile arrays through the Python API (runtime.core.segmenter): refused with a typed error, or accepted
and converted as documented.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from runtime import InputError, Segmenter
from runtime.core.image_input import prepare_image
from tests.helpers.hostile_inputs import rng
from tests.helpers.runtime_models import semantic_model, write_artifact

# -- API arrays -------------------------------------------------------------------------------

_A = rng(9).integers(0, 256, (12, 20, 3), dtype=np.uint8)

API_REFUSED: dict[str, tuple[object, str]] = {
    "none": (None, "expected a numpy array, got NoneType"),
    "list": ([[1, 2], [3, 4]], "got list (for several images use predict_batch)"),
    "string path": ("frame.png", "got str"),
    "bytes": (b"\x89PNG", "got bytes"),
    "rank 0": (np.array(5, np.uint8), "got shape ()"),
    "rank 1": (np.zeros(10, np.uint8), "got shape (10,)"),
    "rank 4": (np.zeros((1, 8, 8, 3), np.uint8), "4-D array"),
    "rank 5": (np.zeros((1, 1, 8, 8, 3), np.uint8), "got shape (1, 1, 8, 8, 3)"),
    "empty rows": (np.zeros((0, 5, 3), np.uint8), "empty"),
    "empty cols": (np.zeros((5, 0), np.uint8), "empty"),
    "empty channels": (np.zeros((5, 5, 0), np.uint8), "empty"),
    "2 channels": (np.zeros((5, 5, 2), np.uint8), "1, 3 or 4 channels"),
    "5 channels": (np.zeros((5, 6, 5), np.uint8), "1, 3 or 4 channels"),
    "channels first": (np.zeros((3, 20, 30), np.uint8), "channels-first"),
    "over max_pixels": (np.zeros((101, 100, 3), np.uint8), "over the limit of 10000"),
    "structured": (np.zeros((4, 4), dtype=[("a", np.uint8), ("b", np.uint8)]), "unsupported array dtype"),
}
for _dtype in (
    np.bool_,
    np.int8,
    np.int16,
    np.int32,
    np.int64,
    np.uint32,
    np.uint64,
    np.float16,
    np.float32,
    np.float64,
    np.complex64,
    np.object_,
):
    API_REFUSED[f"dtype {np.dtype(_dtype).name}"] = (
        np.zeros((6, 6, 3), _dtype),
        f"image dtype is {np.dtype(_dtype)}",
    )
API_REFUSED["dtype str"] = (np.full((4, 4, 3), "a"), "image dtype is <U1")
API_REFUSED["dtype datetime"] = (np.zeros((4, 4, 3), "datetime64[s]"), "image dtype is datetime64[s]")


@pytest.mark.parametrize("case", sorted(API_REFUSED))
def test_api_refuses_array(case, seg):
    array, message = API_REFUSED[case]
    limited = Segmenter(seg.artifact, seg.backend, max_pixels=10000)
    with pytest.raises(InputError) as err:
        limited.predict(array, "cam0")
    assert str(err.value).startswith("cam0: ") and message in str(err.value) and "\n" not in str(err.value)


API_ACCEPTED: dict[str, tuple[np.ndarray, np.ndarray, str]] = {
    "uint8 hwc": (_A, _A, ""),
    "uint8 gray hw": (_A[:, :, 0], np.repeat(_A[:, :, :1], 3, 2), "grayscale replicated"),
    "uint8 gray hw1": (_A[:, :, :1], np.repeat(_A[:, :, :1], 3, 2), "grayscale replicated"),
    "uint8 rgba": (np.dstack([_A, _A[:, :, :1]]), _A, "alpha channel dropped"),
    "uint16 hwc": (_A.astype(np.uint16) * 257, _A, "16-bit values scaled"),
    "uint16 big-endian": ((_A.astype(np.uint16) * 257).astype(">u2"), _A, "16-bit values scaled"),
    "uint16 gray": ((_A[:, :, 0].astype(np.uint16) << 8) | 0xFF, np.repeat(_A[:, :, :1], 3, 2), "grayscale"),
    "uint16 rgba": (np.dstack([_A, _A[:, :, :1]]).astype(np.uint16) << 8, _A, "alpha channel dropped"),
    "strided view": (np.repeat(_A, 2, axis=1)[:, ::2], _A, ""),
    "negative strides": (_A[::-1, ::-1][::-1, ::-1], _A, ""),
    "fortran order": (np.asfortranarray(_A), _A, ""),
    "transposed view": (np.ascontiguousarray(_A.transpose(1, 0, 2)).transpose(1, 0, 2), _A, ""),
    "read-only": (np.frombuffer(_A.tobytes(), np.uint8).reshape(_A.shape), _A, ""),
    "bgr channels view": (np.dstack([_A, _A])[:, :, :3], _A, ""),
    "1x1": (_A[:1, :1], _A[:1, :1], ""),
}


@pytest.mark.parametrize("case", sorted(API_ACCEPTED))
def test_api_accepts_array(case, seg):
    array, equivalent, note = API_ACCEPTED[case]
    result = seg.predict(array, "cam0")
    np.testing.assert_array_equal(result.labels, seg.predict(np.ascontiguousarray(equivalent)).labels)
    assert result.labels.shape == array.shape[:2]
    assert (len(result.notes) == 1 and note in result.notes[0]) if note else result.notes == []
    prepared, _ = prepare_image(array)
    assert prepared.flags.c_contiguous and prepared.dtype == np.uint8 and prepared.shape[2] == 3


BATCH_REFUSED: dict[str, tuple[object, object, str]] = {
    "empty list": ([], None, "no images given"),
    "empty tuple": ((), None, "no images given"),
    "a single 3-D array": (_A, None, "for one image use predict"),
    "a generator": ((a for a in [_A]), None, "expected a list or tuple"),
    "a string": ("a.png", None, "expected a list or tuple"),
    "mixed: array and path": ([_A, "b.png"], None, "image[1]: expected a numpy array, got str"),
    "mixed: array and None": ([_A, None], None, "image[1]: expected a numpy array"),
    "mixed: a float image": ([_A, _A.astype(np.float32)], None, "image[1]: image dtype is float32"),
    "names too short": ([_A, _A], ["a"], "2 images but 1 names"),
    "names not strings": ([_A], [3], "names must be a list of strings"),
    "names a string": ([_A], "a", "names must be a list of strings"),
}


@pytest.mark.parametrize("case", sorted(BATCH_REFUSED))
def test_predict_batch_argument_errors(case, seg):
    images, names, message = BATCH_REFUSED[case]
    with pytest.raises(InputError, match=re.escape(message)):
        seg.predict_batch(images, names)  # type: ignore[arg-type]


def test_predict_batch_mixed_forms_and_static_batch(tmp_path, seg):
    gray = _A[:, :, 0]
    results = seg.predict_batch((_A, gray, _A.astype(np.uint16) << 8, _A[:5, :7]), ["a", "b", "c", "d"])
    assert [r.labels.shape for r in results] == [(12, 20), (12, 20), (12, 20), (5, 7)]
    assert [len(r.notes) for r in results] == [0, 1, 1, 0] and results[1].notes[0].startswith("b: ")
    np.testing.assert_array_equal(results[2].labels, results[0].labels)
    four = np.stack([_A] * 4)
    assert len(seg.predict_batch(four)) == 4
    static2 = Segmenter.open(write_artifact(tmp_path, semantic_model(32, 64, batch=2), shape=(2, 3, 32, 64)))
    assert static2.artifact.batch == 2
    out = static2.predict_batch([_A, _A, _A])  # 3 images on a batch-2 model: the last chunk padded
    assert all(np.array_equal(r.labels, out[0].labels) for r in out)
    with pytest.raises(InputError, match="name must be a string"):
        seg.predict(_A, 5)  # type: ignore[arg-type]
