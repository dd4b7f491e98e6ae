"""Baselines of the paper's comparison, each a config plus the smallest override of `PrefixRFTTrainer`.

* RFT (Dr. GRPO): `PrefixRFTConfig(num_hybrid=0)`, no subclass needed.
* SFT: TRL's SFTTrainer on the demonstrations (`sft.py`).
* SFT then RFT: the SFT model as the starting point of RFT (`compare.py` chains them).
* RL with SFT loss, LUFFY, ReLIFT: `rl_sft.py`, `luffy.py`, `relift.py`.
* CHORD (GRPO + SFT weighted by mu and phi), HPT (SFT or RL per question by its accuracy), SRFT (entropy-weighted
  SFT and RL in one stage), TRAPO (trust-region SFT on prefixes escalated per question): `chord.py`, `hpt.py`,
  `srft.py`, `trapo.py`.
"""

from prefix_rft.baselines.chord import ChordConfig, ChordTrainer
from prefix_rft.baselines.hpt import HptConfig, HptTrainer
from prefix_rft.baselines.luffy import LuffyConfig, LuffyTrainer
from prefix_rft.baselines.relift import ReliftConfig, ReliftTrainer
from prefix_rft.baselines.rl_sft import RLWithSFTConfig, RLWithSFTTrainer
from prefix_rft.baselines.srft import SrftConfig, SrftTrainer
from prefix_rft.baselines.trapo import TrapoConfig, TrapoTrainer

__all__ = [
    "ChordConfig",
    "ChordTrainer",
    "HptConfig",
    "HptTrainer",
    "LuffyConfig",
    "LuffyTrainer",
    "RLWithSFTConfig",
    "RLWithSFTTrainer",
    "ReliftConfig",
    "ReliftTrainer",
    "SrftConfig",
    "SrftTrainer",
    "TrapoConfig",
    "TrapoTrainer",
]
