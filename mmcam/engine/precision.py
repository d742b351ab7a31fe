"""The caller's mixed-precision setting, re-applied to forward passes only."""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Precision:
    """Whether autocast was on for ``device`` when mmcam was called, and with which dtype.

    Forward passes run under it (bf16/fp16 activations, as the user asked); weighting,
    upsampling and normalization run with autocast off, in float32.
    """

    device: str
    enabled: bool
    dtype: torch.dtype

    @classmethod
    def current(cls, device: str) -> Precision:
        return cls(device, torch.is_autocast_enabled(device), torch.get_autocast_dtype(device))

    def applied(self) -> AbstractContextManager:
        return torch.autocast(self.device, dtype=self.dtype, enabled=self.enabled)
