"""PEM (Prototype-based Efficient MaskFormer) in plain PyTorch."""

from pem.config import PEMConfig, get_preset, preset_names

__all__ = ["PEMConfig", "get_preset", "preset_names"]
