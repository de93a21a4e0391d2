import torch

from hepta.modality.chat import ImageCodes, Turn, encode_chat, image_vocab
from hepta.tokenizer import Tokenizer

TEXTS = ["What digit is this?", "Draw the digit 7.", "def f(x):\n    return x\n"] * 30


def _tokenizer() -> Tokenizer:
    return Tokenizer.train(TEXTS, text_vocab_size=300).with_image_codes(125)


def test_text_chats_encode_exactly_as_the_text_chat_format():
    tokenizer = _tokenizer()
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What digit is this?"},
                {"role": "assistant", "content": "7"}, {"role": "user", "content": "def f(x):"}]
    turns = [Turn(m["role"], (m["content"],)) for m in messages]
    ids, _ = encode_chat(turns, tokenizer, None)
    assert ids == tokenizer.encode(tokenizer.format_chat(messages))


def test_images_become_spans_where_they_stand_and_answers_are_marked():
    tokenizer = _tokenizer()
    vocab = image_vocab(tokenizer, 4)
    codes_a, codes_b = torch.randint(0, 125, (4, 4)), torch.randint(0, 125, (4, 4))
    turns = [Turn("user", ("Compare", ImageCodes(codes_a), "and", ImageCodes(codes_b))),
             Turn("assistant", (ImageCodes(codes_b),))]
    ids, answer = encode_chat(turns, tokenizer, vocab, add_generation_prompt=False)
    grids = vocab.find_spans(ids)
    assert [g.tolist() for g in grids] == [codes_a.tolist(), codes_b.tolist(), codes_b.tolist()]
    # the answer is the assistant's span and its <|end|>; nothing of the user turn or the role marker
    assistant = ids.index(tokenizer.special_ids["<|assistant|>"])
    assert not any(answer[:assistant + 1])
    assert all(answer[assistant + 1:]) and len(ids) - assistant - 1 == vocab.span_length + 1
    assert ids[-1] == tokenizer.end_id
