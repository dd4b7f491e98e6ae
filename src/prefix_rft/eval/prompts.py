"""The paper's prompt templates (App. A; docs/eval.md) as chat messages; the model's chat template renders them."""

from __future__ import annotations

BOXED_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}"
# LUFFY's system prompt without its <think> format sentences ("sys_wo_format"), verbatim as the spec (§2.2) quotes it.
SYS_WO_FORMAT = (
    "Your task is to follow a systematic, thorough reasoning process before providing the final solution. This "
    "involves analyzing, summarizing, exploring, reassessing, and refining your thought process through multiple "
    "iterations. Structure your response into two sections: Thought and Solution. Each thought should include "
    "detailed analysis, brainstorming, verification, and refinement of ideas. In the Solution section, provide the "
    "final, logical, and accurate answer, clearly derived from the exploration in the Thought section. Include the "
    "answer in \\boxed{} for closed-form results like multiple choices or mathematical solutions"
)

# name -> (system message or None, text appended to the problem in the user message)
TEMPLATES: dict[str, tuple[str | None, str]] = {
    # the paper's training prompt: no system message, instruction after the question
    "no_system": (None, "\n" + BOXED_INSTRUCTION),
    "sys_wo_format": (SYS_WO_FORMAT, ""),
    # Qwen2.5-Math's chain-of-thought prompt: the instruction as the system message
    "qwen_math_cot": (BOXED_INSTRUCTION + ".", ""),
}


def build_messages(problem: str, template: str) -> list[dict[str, str]]:
    """Chat messages asking `problem` with the named template."""
    if template not in TEMPLATES:
        raise ValueError(f"unknown template {template!r}; choose from {sorted(TEMPLATES)}")
    system, suffix = TEMPLATES[template]
    messages = [{"role": "system", "content": system}] if system is not None else []
    return [*messages, {"role": "user", "content": problem + suffix}]
