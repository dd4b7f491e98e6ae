"""A character-level tokenizer with a chat template, built with the `tokenizers` library.

Every printable ASCII character (plus newline and tab) is one token, so any task text round-trips exactly and a demo
can be cut after any character. Chats render as `<bos><user>...<eos><assistant>...<eos>`.
"""

from __future__ import annotations

import string

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ["<pad>", "<eos>", "<bos>", "<unk>", "<system>", "<user>", "<assistant>"]
# `string.printable` minus the vertical tab and form feed, and minus `\r` so that line ends have one spelling.
ALPHABET = [c for c in string.printable if c not in "\r\x0b\x0c"]

# Each message is `<role>content<eos>`, content verbatim (no strip), so `continue_final_message=True` can cut the
# rendered text right after the final message's content.
CHAT_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{%- if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{- raise_exception('unknown role: ' + message['role']) }}"
    "{%- endif %}"
    "{{- '<' + message['role'] + '>' + message['content'] + eos_token }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<assistant>' }}{%- endif %}"
)


def build_tokenizer() -> PreTrainedTokenizerFast:
    """The task tokenizer: left padding, `<eos>` ends every turn, `<bos>` is prepended when adding special tokens."""
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS + ALPHABET)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    # `[\s\S]` rather than `.`, which would not match a newline.
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", vocab["<bos>"])]
    )
    tok.add_special_tokens(SPECIAL_TOKENS)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        additional_special_tokens=SPECIAL_TOKENS[4:],
        padding_side="left",
        clean_up_tokenization_spaces=False,
        chat_template=CHAT_TEMPLATE,
        model_max_length=512,
    )
