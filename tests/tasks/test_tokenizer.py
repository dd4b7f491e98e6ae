import pytest
from transformers import AutoTokenizer

from prefix_rft.tasks import build_tokenizer, make_rows

USER = [{"role": "user", "content": "compute 38+47-19"}]


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


def test_special_tokens_and_padding_side(tokenizer):
    assert tokenizer.eos_token == "<eos>"
    assert tokenizer.pad_token == "<pad>"
    assert tokenizer.bos_token == "<bos>"
    assert tokenizer.unk_token == "<unk>"
    assert tokenizer.padding_side == "left"


def test_one_token_per_character_after_bos(tokenizer):
    tokens = tokenizer.convert_ids_to_tokens(tokenizer("a b\n7")["input_ids"])
    assert tokens == ["<bos>", "a", " ", "b", "\n", "7"]


def test_round_trip_keeps_spaces_newlines_and_specials(tokenizer):
    text = "38+47=85\n  check 85-47=38 ok\tanswer: 85<eos>"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == "<bos>" + text


def test_demos_round_trip_without_special_tokens(tokenizer):
    for split in ("train", "ood"):
        for row in make_rows(split, 100, seed=0):
            demo = row["demos"][0]
            ids = tokenizer(demo, add_special_tokens=False)["input_ids"]
            assert tokenizer.unk_token_id not in ids
            assert tokenizer.decode(ids) == demo


def test_a_demo_cut_at_any_token_decodes_to_the_same_text_prefix(tokenizer):
    demo = "38+47=85\n85-19=66\nanswer: 66"
    ids = tokenizer(demo, add_special_tokens=False)["input_ids"]
    # one token per character, so the first k tokens are the first k characters ("38+47=85" is 8 of them)
    expected = ["", "3", "38+47=85", "38+47=85\n", "38+47=85\n85-19=66\na"]
    assert [tokenizer.decode(ids[:k]) for k in (0, 1, 8, 9, 19)] == expected


def test_chat_template_with_generation_prompt(tokenizer):
    rendered = tokenizer.apply_chat_template(USER, add_generation_prompt=True, tokenize=False)
    assert rendered == "<bos><user>compute 38+47-19<eos><assistant>"


def test_chat_template_continues_a_final_assistant_message(tokenizer):
    chat = USER + [{"role": "assistant", "content": "38+47=85\n85-"}]
    rendered = tokenizer.apply_chat_template(chat, continue_final_message=True, tokenize=False)
    assert rendered == "<bos><user>compute 38+47-19<eos><assistant>38+47=85\n85-"


def test_continued_message_keeps_trailing_whitespace(tokenizer):
    chat = USER + [{"role": "assistant", "content": "38+47-19=66\nanswer: "}]
    rendered = tokenizer.apply_chat_template(chat, continue_final_message=True, tokenize=False)
    assert rendered.endswith("<assistant>38+47-19=66\nanswer: ")


def test_closed_assistant_message_ends_with_eos(tokenizer):
    chat = [{"role": "system", "content": "be brief"}] + USER + [{"role": "assistant", "content": "answer: 66"}]
    rendered = tokenizer.apply_chat_template(chat, tokenize=False)
    assert rendered == "<bos><system>be brief<eos><user>compute 38+47-19<eos><assistant>answer: 66<eos>"


def test_chat_template_tokenizes_role_markers_as_single_tokens(tokenizer):
    ids = tokenizer.apply_chat_template(USER, add_generation_prompt=True, tokenize=True, return_dict=False)
    tokens = tokenizer.convert_ids_to_tokens(ids)
    # <bos> <user> + 16 characters of "compute 38+47-19" + <eos> <assistant>
    assert len(tokens) == 20
    assert tokens[:3] == ["<bos>", "<user>", "c"] and tokens[-2:] == ["<eos>", "<assistant>"]


def test_unknown_role_is_rejected(tokenizer):
    with pytest.raises(Exception, match="unknown role"):
        tokenizer.apply_chat_template([{"role": "tool", "content": "x"}], tokenize=False)


def test_left_padding_of_a_batch(tokenizer):
    batch = tokenizer(["ab", "abcd"], padding=True)
    pad, bos = tokenizer.pad_token_id, tokenizer.bos_token_id
    assert batch["input_ids"][0][:3] == [pad, pad, bos]
    assert batch["attention_mask"] == [[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]]


def test_save_and_load_keep_the_behaviour(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    text = "38+47=85\nanswer: 85"
    assert loaded(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert loaded.decode(loaded(text, add_special_tokens=False)["input_ids"]) == text
    assert loaded.padding_side == "left" and loaded.eos_token == "<eos>" and loaded.pad_token == "<pad>"
    chat = USER + [{"role": "assistant", "content": "38+"}]
    assert loaded.apply_chat_template(chat, continue_final_message=True, tokenize=False).endswith("<assistant>38+")
