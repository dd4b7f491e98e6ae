"""The TRL adapter: the only package that imports trl, accelerate or vllm."""

from prefix_rft.trl.config import PrefixRFTConfig
from prefix_rft.trl.trainer import PrefixRFTTrainer

__all__ = ["PrefixRFTConfig", "PrefixRFTTrainer"]
