"""What the doubles tell TRL about vLLM: installed, at one version of TRL 1.16's supported range (0.22 to 0.31)."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

import pytest
from packaging.version import Version

EMULATED_VLLM_VERSION = "0.31.0"


def version_at_least(version: str, minimum: str) -> bool:
    return Version(version) >= Version(minimum)


def emulated_is_vllm_available(version: str = EMULATED_VLLM_VERSION) -> Callable[..., bool]:
    """A stand-in for `trl.import_utils.is_vllm_available` that answers as if `vllm==version` were installed."""

    def is_vllm_available(min_version: str | None = None) -> bool:
        return min_version is None or version_at_least(version, min_version)

    return is_vllm_available


def patch_is_vllm_available(
    monkeypatch: pytest.MonkeyPatch, modules: list[ModuleType], version: str = EMULATED_VLLM_VERSION
) -> None:
    """Replace the `is_vllm_available` name each module imported from `trl.import_utils` (checked at call time)."""
    for module in modules:
        monkeypatch.setattr(module, "is_vllm_available", emulated_is_vllm_available(version))
