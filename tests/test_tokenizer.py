import inspect
import json

import pytest

from hepta.errors import HeptaError
from hepta.interop.hf_tokenizer import HFTokenizer
from hepta.tokenizer import NUM_SPECIAL_TOKENS, SPECIAL_TOKENS, TextTokenizer, Tokenizer

TEXTS = [
    "def add(a, b):\n    return a + b\n",
    "こんにちは世界、今日は良い天気ですね。東京の株価が急上昇🚀",
    "emoji 👩‍👩‍👧‍👦 family, flags 🇯🇵🇺🇸, combining é vs é, tabs\tand\r\nCRLF",
    "",
    "\x00\x01 control bytes and a lone surrogate-free 𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
]


@pytest.fixture(scope="module")
def tokenizer(corpus_texts):
    return Tokenizer.train(corpus_texts, text_vocab_size=600)


@pytest.fixture(scope="module")
def corpus_texts(tmp_path_factory):
    from helpers import make_corpus

    folder = make_corpus(tmp_path_factory.mktemp("tok"))
    return [f.read_text() for f in sorted(folder.iterdir())]


@pytest.mark.parametrize("text", TEXTS)
def test_round_trips_any_utf8_text(tokenizer, text):
    assert tokenizer.decode(tokenizer.encode(text)) == text


def test_layout_puts_text_first_then_specials(tokenizer):
    layout = tokenizer.layout
    assert layout.text_vocab_size == 600
    assert tokenizer.vocab_size == 600 + NUM_SPECIAL_TOKENS
    for offset, token in enumerate(SPECIAL_TOKENS):
        assert tokenizer.encode(token) == [600 + offset]  # one id each, at a fixed place
    assert max(max(tokenizer.encode(t), default=0) for t in TEXTS) < 600  # text never uses a special id


def test_modality_blocks_append_without_moving_text_or_specials(tokenizer):
    from hepta.tokenizer import VocabLayout

    layout = VocabLayout(tokenizer.layout.text_vocab_size, num_image_codes=8192, num_audio_codes=4096)
    assert layout.special_start == tokenizer.layout.special_start
    assert layout.image_start == tokenizer.layout.special_start + NUM_SPECIAL_TOKENS
    assert layout.size == layout.image_start + 8192 + 4096


def test_every_two_digit_number_is_one_token_and_clock_times_spell_alike(corpus_texts):
    tokenizer = Tokenizer.train(corpus_texts, text_vocab_size=3000)
    numbers = [f"{n:02d}" for n in range(100)]
    assert all(len(tokenizer.encode(number)) == 1 for number in numbers)
    assert len({tokenizer.encode(number)[0] for number in numbers}) == 100
    # a time's seconds are one token whatever their value, as a video model copies them
    assert [len(tokenizer.encode(f"0:{s:02d}")) for s in range(60)] == [3] * 60
    assert tokenizer.layout.text_vocab_size == 3000 and max(tokenizer.encode(" ".join(numbers))) < 3000


def test_the_numbers_take_the_places_of_the_last_merges_only(corpus_texts):
    from hepta.tokenizer import train_bpe, with_two_digit_numbers

    bpe = train_bpe(corpus_texts, 3000)
    vocab = bpe.get_vocab()
    missing = [f"{n:02d}" for n in range(100) if f"{n:02d}" not in vocab]
    assert missing  # the corpus's BPE lacks some, so the change is seen
    fixed_bpe = with_two_digit_numbers(bpe)
    fixed = fixed_bpe.get_vocab()
    assert len(fixed) == len(vocab) and sorted(fixed.values()) == sorted(vocab.values())
    kept = vocab.keys() & fixed.keys()
    assert all(fixed[token] == vocab[token] for token in kept)  # no token that stays moves
    assert len(vocab.keys() - kept) == len(missing)
    assert min(vocab[token] for token in vocab.keys() - kept) >= len(vocab) - 200  # the last merges went
    text = "x = 51 + 39  # 1951"
    assert fixed_bpe.decode(fixed_bpe.encode(text).ids) == text
    assert len(fixed_bpe.encode("51").ids) == 1 < len(bpe.encode("51").ids)


def test_a_small_vocabulary_keeps_its_merges(corpus_texts):
    from hepta.tokenizer import train_bpe, with_two_digit_numbers

    bpe = train_bpe(corpus_texts, 600)  # lacks nearly every number: they would be a quarter of its merges
    assert with_two_digit_numbers(bpe).get_vocab() == bpe.get_vocab()


def test_digit_tokens_write_every_number_a_digit_a_token_and_keep_the_rest(corpus_texts, tmp_path):
    apart = Tokenizer.train(corpus_texts, text_vocab_size=3000, digit_tokens=True)
    together = Tokenizer.train(corpus_texts, text_vocab_size=3000)
    assert apart.digit_tokens and not together.digit_tokens
    assert apart.layout == together.layout  # as many text ids: merges numbers cannot use go to the text
    digit_ids = [apart.encode(str(d))[0] for d in range(10)]
    assert apart.encode("0:35") == [digit_ids[0], *apart.encode(":"), digit_ids[3], digit_ids[5]]
    assert [len(apart.encode(f"0m{s:02d}")) for s in range(60)] == [4] * 60
    # a digit after a space stays one token with it, as a question's " 7" is; the number's other digits follow alone
    assert len(apart.encode(" 7")) == 1 and apart.encode(" 1951")[1:] == [digit_ids[9], digit_ids[5], digit_ids[1]]
    text = "x = 1951 + 0:42  # 3=7 * 0m35\n"
    assert apart.decode(apart.encode(text)) == text
    words = "def hello(world):\n    return world"
    assert apart.encode(words) != [] and len(apart.encode(words)) == len(together.encode(words))
    apart.save(tmp_path)
    assert Tokenizer.load(tmp_path).encode(text) == apart.encode(text) and Tokenizer.load(tmp_path).digit_tokens


def test_a_tokenizer_written_before_the_time_and_tens_digits_loads_with_them_in_its_reserved_slots(corpus_texts,
                                                                                                   tmp_path):
    from tokenizers import Tokenizer as HFTokenizer

    from hepta.tokenizer import FIRST_RESERVED, LEGACY_NAMES, NAMED_SPECIAL_TOKENS, train_bpe

    older = train_bpe(corpus_texts, 600)  # its specials as files before the time digits name them
    older.add_special_tokens(list(NAMED_SPECIAL_TOKENS[:FIRST_RESERVED])
                             + [f"<|reserved_{i}|>" for i in range(NUM_SPECIAL_TOKENS - FIRST_RESERVED)])
    (tmp_path / "tokenizer.json").write_text(older.to_str())
    loaded = Tokenizer.load(tmp_path)
    assert loaded.special_ids["<|time_3|>"] == HFTokenizer.from_file(str(tmp_path / "tokenizer.json")).token_to_id(
        LEGACY_NAMES["<|time_3|>"]) == 600 + FIRST_RESERVED + 3
    assert loaded.special_ids["<|tens_2|>"] == HFTokenizer.from_file(str(tmp_path / "tokenizer.json")).token_to_id(
        "<|reserved_12|>") == 600 + FIRST_RESERVED + 12
    assert loaded.special_ids["<|reserved_16|>"] == 600 + FIRST_RESERVED + 16


def test_save_and_load_keep_every_id(tokenizer, tmp_path):
    tokenizer.save(tmp_path)
    again = Tokenizer.load(tmp_path)
    for text in TEXTS:
        assert again.encode(text) == tokenizer.encode(text)
    assert again.special_ids == tokenizer.special_ids


def test_chat_format_uses_role_tokens(tokenizer):
    text = tokenizer.format_chat([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])
    assert text == "<|system|>Be brief.<|end|><|user|>Hi<|end|><|assistant|>"
    with pytest.raises(HeptaError, match="unknown chat role"):
        tokenizer.format_chat([{"role": "robot", "content": "x"}])


def test_loading_a_broken_file_names_it(tmp_path):
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(HeptaError, match="tokenizer.json"):
        Tokenizer.load(tmp_path)


def _protocol_members(protocol) -> dict[str, object]:
    """What the protocol's body declares: properties and methods by value, data attributes as None."""
    members = {name: value for name, value in vars(protocol).items() if not name.startswith("_")}
    return {**members, **{name: None for name in protocol.__annotations__}}


@pytest.mark.parametrize("cls", [Tokenizer, HFTokenizer])
def test_both_tokenizers_have_the_text_tokenizer_shape(cls):
    members = _protocol_members(TextTokenizer)
    assert {"encode", "decode", "format_chat", "stop_ids", "has_tool_role", "hf"} <= set(members)
    for name, declared in members.items():
        if declared is None:  # a data attribute, set by __init__: the isinstance test below sees it
            continue
        actual = inspect.getattr_static(cls, name, None)
        if isinstance(declared, property):
            assert isinstance(actual, property), f"{cls.__name__}.{name} is not a property"
            continue
        assert callable(actual), f"{cls.__name__} has no method {name}"
        want, have = inspect.signature(declared).parameters, inspect.signature(actual).parameters
        for param in want.values():  # every call the protocol allows binds the same way
            assert param.name in have, f"{cls.__name__}.{name} lacks the parameter {param.name}"
            assert (have[param.name].kind, have[param.name].default) == (param.kind, param.default), \
                f"{cls.__name__}.{name}({param.name}) differs from the protocol"
        extra = [p for p in have.values() if p.name not in want]
        assert all(p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in extra), \
            f"{cls.__name__}.{name} needs arguments the protocol does not pass"


def test_both_tokenizers_are_text_tokenizers(tokenizer, tmp_path):
    tokenizer.save(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|endoftext|>"}))
    hf = HFTokenizer(tmp_path)
    assert isinstance(tokenizer, TextTokenizer) and isinstance(hf, TextTokenizer)
    assert not isinstance(object(), TextTokenizer)
    # hepta renders tool turns itself; a Hugging Face template gets them as user turns
    assert (tokenizer.has_tool_role, hf.has_tool_role) == (True, False)
    assert (tokenizer.bos_id, hf.bos_id) == (None, None)
    assert tokenizer.encode("same text") == hf.encode("same text") and hf.eos_id == tokenizer.eos_id


def test_the_image_code_block_is_appended_and_moves_no_text_or_special_id(tokenizer, tmp_path):
    with_images = tokenizer.with_image_codes(125)
    assert with_images.layout.text_vocab_size == tokenizer.layout.text_vocab_size
    assert with_images.special_ids == tokenizer.special_ids
    assert with_images.vocab_size == tokenizer.vocab_size + 125
    assert with_images.layout.image_start == tokenizer.vocab_size
    for text in TEXTS:
        assert with_images.encode(text) == tokenizer.encode(text)
    with_images.save(tmp_path)
    reloaded = Tokenizer.load(tmp_path)
    assert reloaded.layout == with_images.layout
    assert reloaded.describe_layout()["image"] == [tokenizer.vocab_size, tokenizer.vocab_size + 125]
    with pytest.raises(HeptaError, match="already holds a code block"):
        reloaded.with_image_codes(10)


def test_the_audio_code_block_follows_the_image_block_and_moves_nothing_before_it(tokenizer, tmp_path):
    with_images = tokenizer.with_image_codes(125)
    with_audio = with_images.with_audio_codes(1000)
    assert with_audio.layout.image_start == with_images.layout.image_start
    assert with_audio.layout.audio_start == with_images.vocab_size
    assert with_audio.vocab_size == with_images.vocab_size + 1000
    assert with_audio.special_ids == tokenizer.special_ids
    for text in TEXTS:
        assert with_audio.encode(text) == tokenizer.encode(text)
    with_audio.save(tmp_path)
    reloaded = Tokenizer.load(tmp_path)
    assert reloaded.layout == with_audio.layout
    assert reloaded.describe_layout()["audio"] == [with_images.vocab_size, with_images.vocab_size + 1000]
    assert reloaded.num_generatable_ids == tokenizer.layout.text_vocab_size  # audio codes are not text
    with pytest.raises(HeptaError, match="already holds an audio code block"):
        reloaded.with_audio_codes(10)
    with pytest.raises(HeptaError, match="already holds a code block"):
        reloaded.with_image_codes(10)  # an image block after the audio one would move the audio ids


def test_image_codes_are_not_sampled_as_text(tokenizer):
    assert tokenizer.with_image_codes(125).num_generatable_ids == tokenizer.layout.text_vocab_size
