"""The one device switch (``device: auto|cpu|cuda``) for torch, XGBoost and LightGBM, and the
polars engine switch (``features.engine: auto|cpu|gpu``)."""

from __future__ import annotations

import importlib.util


def cuda_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # pragma: no cover
        return False


def resolve_device(setting: str) -> str:
    """'auto' -> 'cuda' when a CUDA device is visible, else 'cpu'. 'cuda' without one is an error."""
    if setting == "cpu":
        return "cpu"
    has = cuda_available()
    if setting == "cuda" and not has:
        raise RuntimeError("device: cuda was asked for, but no CUDA device is visible (torch.cuda.is_available() is False); use device: cpu or auto")
    return "cuda" if has else "cpu"


def resolve_polars_engine(setting: str) -> tuple[str, str]:
    """Returns (engine for LazyFrame.collect, a sentence saying why)."""
    has_cudf = importlib.util.find_spec("cudf_polars") is not None
    if setting == "cpu":
        return "cpu", "features.engine=cpu: polars CPU engine"
    if setting == "gpu":
        if not has_cudf:
            raise RuntimeError(
                "features.engine: gpu needs the polars GPU engine: pip install -r requirements-gpu.txt "
                "(cudf-polars-cu12) on a machine with an NVIDIA GPU and CUDA 12; or set features.engine: cpu"
            )
        if not cuda_available():
            raise RuntimeError("features.engine: gpu: cudf-polars is installed but no CUDA device is visible")
        return "gpu", "features.engine=gpu: polars cuDF engine"
    if has_cudf and cuda_available():
        return "gpu", "features.engine=auto: cudf-polars and a CUDA device found, using the polars GPU engine"
    why = "cudf-polars is not installed" if not has_cudf else "no CUDA device is visible"
    return "cpu", f"features.engine=auto: {why}, using the polars CPU engine"
