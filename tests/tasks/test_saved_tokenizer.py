"""A base-model directory must give back the exact tokenizer through AutoTokenizer (as TRL and users load it)."""

from transformers import AutoModelForCausalLM, AutoTokenizer

from prefix_rft.tasks.model import build_model
from prefix_rft.tasks.tokenizer import build_tokenizer


def test_tokenizer_saved_with_model_keeps_spaces_and_newlines(tmp_path):
    tokenizer = build_tokenizer()
    build_model(tokenizer, "test").save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    text = "7*8=56\ncheck 56/8=7 ok\nanswer: 56"
    ids = loaded(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text)  # one token per character, whitespace included
    assert loaded.decode(ids) == text
    assert AutoModelForCausalLM.from_pretrained(tmp_path).config.vocab_size == len(tokenizer)
