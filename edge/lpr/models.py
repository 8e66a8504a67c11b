"""The PP-OCRv4 models inside the ``rapidocr-onnxruntime`` wheel, as one-thread onnxruntime
sessions: shared by the recogniser (``ocr.py``) and the text detector (``textdet.py``) so both
find, check and load their model the same way. Only loads files: no network.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

MODEL_PACKAGE = "rapidocr_onnxruntime"


class OcrError(RuntimeError):
    """The OCR engine could not be loaded or run (message says what to fix)."""


def model_path(relative: str, what: str) -> Path:
    """Path of a model file inside the wheel. ``find_spec`` locates the wheel without importing
    it: its ``__init__`` pulls in the detector pipeline (shapely, pyclipper, ...) we never use."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise OcrError("OCR engine missing: install the pinned 'rapidocr-onnxruntime' (make setup)")
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        raise OcrError(f"{what} not found at {path}: reinstall rapidocr-onnxruntime")
    return path


def session(relative: str, what: str, *, threads: int = 1) -> Any:
    """An onnxruntime CPU session on one of the wheel's models (``threads`` intra-op threads:
    one core per lane)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    # no arena: it keeps the largest scratch of every input shape seen (the OCR's batch
    # widths vary by crop) for ever; plain allocations cost no measurable time (#15)
    opts.enable_cpu_mem_arena = False
    return ort.InferenceSession(
        str(model_path(relative, what)), opts, providers=["CPUExecutionProvider"]
    )
