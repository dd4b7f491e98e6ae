"""Prefix-RFT: blend supervised and reinforcement fine-tuning with prefix sampling (arXiv 2507.01679).

`PrefixRFTConfig` and `PrefixRFTTrainer` are imported lazily so that `import prefix_rft.core` stays free of
trl/transformers.
"""

__version__ = "0.1.0"
__all__ = ["PrefixRFTConfig", "PrefixRFTTrainer", "__version__"]


def __getattr__(name: str):
    if name in ("PrefixRFTConfig", "PrefixRFTTrainer"):
        from prefix_rft import trl as _trl

        return getattr(_trl, name)
    raise AttributeError(f"module 'prefix_rft' has no attribute {name!r}")
