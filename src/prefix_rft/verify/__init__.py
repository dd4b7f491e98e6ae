"""Math answer verification: math-verify behind a process pool with a hard per-call timeout (docs/verify.md).

Importing this package does not import sympy; the workers do.
"""

from prefix_rft.verify.extract import answer_region, last_boxed
from prefix_rft.verify.verifier import MathVerifier, default_verifier, math_reward

__all__ = ["MathVerifier", "answer_region", "default_verifier", "last_boxed", "math_reward"]
