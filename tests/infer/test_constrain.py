"""Constrained decoding from a randomly initialised model: whatever it samples, the output is valid.

Sampling is at temperature 1.0 over several seeds; strings in the schemas are bounded (maxLength
or a bounded pattern) because a random model rarely chooses to close an unbounded one within a
few hundred tokens, and a truncated answer cannot parse.
"""

import json

import jsonschema_rs
import pytest
import torch

import hepta
from hepta.infer.constrain import ConstraintSpec, allowed_masks, llg_tokenizer
from hepta.infer.sampling import SamplingParams
from hepta.infer.tools import InvalidField
from hepta.interop.hf_tokenizer import HFTokenizer
from hepta.tokenizer import Tokenizer
from helpers import MICRO, engine_generate

SEEDS = range(5)
MAX_TOKENS = 300

PET_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "kind": {"enum": ["cat", "dog", "owl"]},
        "age": {"type": "integer", "minimum": 0, "maximum": 30},
        "code": {"type": "string", "pattern": "^[A-Z]{2}-[0-9]{3}$"},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 6}, "minItems": 1, "maxItems": 3},
        "owner": {
            "type": "object",
            "properties": {"email": {"type": "string", "pattern": "^[a-z]{1,8}@[a-z]{1,8}\\.(com|org)$"},
                           "verified": {"type": "boolean"}},
            "required": ["email", "verified"],
            "additionalProperties": False,
        },
        "note": {"type": ["string", "null"], "maxLength": 10},
    },
    "required": ["name", "kind", "age", "code", "tags", "owner"],
    "additionalProperties": False,
}

OVERLAPPING_ONE_OF = {"oneOf": [{"type": "object", "properties": {"a": {"type": "integer"}}},
                              {"type": "object", "properties": {"b": {"type": "string"}}}]}

CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
          "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def json_schema_format(schema: dict, name: str = "answer") -> dict:
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # one-token decode steps of a micro model: a second thread only adds contention
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def corpus_texts(corpus):
    return [f.read_text() for f in sorted(corpus.iterdir())]


@pytest.fixture(scope="module")
def tokenizer(corpus_texts):
    return Tokenizer.train(corpus_texts, text_vocab_size=MICRO["vocab_size"] - 32)


@pytest.fixture(scope="module")
def model():
    config = hepta.get_preset("tiny").with_changes({**MICRO, "max_seq_len": 1280})  # room for a tool prompt
    return hepta.build_model(config, seed=0).eval()


@pytest.fixture(scope="module")
def hf_tokenizer(corpus_texts, tmp_path_factory):
    """A Qwen-like Hugging Face folder: byte-level BPE, ChatML specials, <tool_call> as a plain added token."""
    from tokenizers import AddedToken, decoders, models, pre_tokenizers, trainers
    from tokenizers import Tokenizer as Backend

    backend = Backend(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.train_from_iterator(corpus_texts, trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    backend.add_tokens([AddedToken("<tool_call>", special=False), AddedToken("</tool_call>", special=False)])
    folder = tmp_path_factory.mktemp("hf_tokenizer")
    backend.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "chat_template": CHATML}))
    tokenizer = HFTokenizer(folder)
    assert tokenizer.vocab_size < MICRO["vocab_size"]  # the model has padding rows past the tokenizer
    return tokenizer


@pytest.fixture(scope="module")
def sentencepiece_tokenizer(corpus_texts, tmp_path_factory):
    """A Llama/Mixtral-like folder: "▁" for spaces, byte-fallback <0xNN> tokens, <s> and </s>."""
    from tokenizers import Tokenizer as Backend
    from tokenizers import decoders, models, normalizers, trainers

    backend = Backend(models.BPE(byte_fallback=True, unk_token="<unk>"))
    backend.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    backend.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
                                         decoders.Strip(" ", 1, 0)])
    backend.train_from_iterator(corpus_texts, trainers.BpeTrainer(
        vocab_size=200, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False))
    # the 256 byte tokens belong to the model's vocabulary (not added tokens), as in Llama's
    data = json.loads(backend.to_str())
    vocab = data["model"]["vocab"]
    for byte in range(256):
        vocab.setdefault(f"<0x{byte:02X}>", len(vocab))
    backend = Backend.from_str(json.dumps(data))
    folder = tmp_path_factory.mktemp("sentencepiece_tokenizer")
    backend.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "bos_token": "<s>", "eos_token": "</s>",
        "chat_template": "{{ bos_token }}{% for m in messages %}[INST] {{ m['content'] }} [/INST]{% endfor %}"}))
    return HFTokenizer(folder)


def chat_prompt(tokenizer, content="Describe a pet as JSON."):
    return tokenizer.format_chat([{"role": "user", "content": content}])


def structure_ids(tokenizer) -> list[int]:
    """Ids a grammar must never allow: hepta's role/modality/reserved ids, or the HF special tokens, minus end ids."""
    if isinstance(tokenizer, Tokenizer):
        ids = set(tokenizer.special_ids.values())
    else:
        ids = {i for i, token in tokenizer.hf.get_added_tokens_decoder().items() if token.special}
    return sorted(ids - tokenizer.stop_ids)


def random_walk(spec: ConstraintSpec, tokenizer, vocab_size: int, seed: int, max_steps: int = 200):
    """Sample uniformly among allowed tokens, checking the mask's invariants at every step."""
    generator = torch.Generator().manual_seed(seed)
    constraint = spec.new()
    end_ids, banned = sorted(tokenizer.stop_ids), structure_ids(tokenizer)
    ids = []
    for _ in range(max_steps):
        mask = constraint.allowed_mask(vocab_size)
        assert mask.shape == (vocab_size,) and mask.dtype == torch.bool
        assert not mask[banned].any()
        assert not mask[tokenizer.vocab_size:].any()
        assert bool(mask[end_ids].all()) == constraint.is_accepting == bool(mask[end_ids].any())
        choice = int(torch.multinomial(mask.float(), 1, generator=generator))
        if choice in end_ids:
            return ids, "stop"
        constraint.accept(choice)
        ids.append(choice)
        if constraint.is_finished:
            assert constraint.is_accepting
            return ids, "stop"
    return ids, "length"


def test_json_object_output_parses_for_every_seed(model, tokenizer):
    spec = ConstraintSpec.for_request(tokenizer, {"type": "json_object"})
    for seed in SEEDS:
        out = engine_generate(model, tokenizer, chat_prompt(tokenizer), spec, MAX_TOKENS,
                              SamplingParams(temperature=1.0, seed=seed))
        assert out.finish_reason == "stop", out.text
        assert isinstance(json.loads(out.text), dict)


def test_json_schema_output_validates_for_every_seed(model, tokenizer):
    spec = ConstraintSpec.for_request(tokenizer, json_schema_format(PET_SCHEMA, "pet"))
    validator = jsonschema_rs.validator_for(PET_SCHEMA)
    answers = []
    for seed in SEEDS:
        out = engine_generate(model, tokenizer, chat_prompt(tokenizer), spec, MAX_TOKENS,
                              SamplingParams(temperature=1.0, seed=seed))
        assert out.finish_reason == "stop", out.text
        answer = json.loads(out.text)
        validator.validate(answer)
        assert not set(tokenizer.stop_ids) & set(out.token_ids)  # the grammar ended it, not an end token
        answers.append(answer)
    assert len({json.dumps(a) for a in answers}) == len(answers)  # really sampled, not one forced string


def test_unconstrained_model_output_is_not_json(model, tokenizer):
    # the control: without the grammar the same model and seeds write no valid answer
    validator = jsonschema_rs.validator_for(PET_SCHEMA)
    for seed in SEEDS:
        out = engine_generate(model, tokenizer, chat_prompt(tokenizer), None, 40,
                              SamplingParams(temperature=1.0, seed=seed))
        try:
            assert not validator.is_valid(json.loads(out.text))
        except json.JSONDecodeError:
            pass


@pytest.mark.parametrize("response_format", [{"type": "json_object"}, json_schema_format(PET_SCHEMA)])
def test_mask_allows_no_structure_ids_and_end_ids_exactly_when_accepting(tokenizer, response_format):
    spec = ConstraintSpec.for_request(tokenizer, response_format)
    for seed in SEEDS:
        ids, finish = random_walk(spec, tokenizer, vocab_size=tokenizer.vocab_size + 40, seed=seed)
        if finish == "stop" and response_format["type"] == "json_schema":
            jsonschema_rs.validator_for(PET_SCHEMA).validate(json.loads(tokenizer.decode(ids)))


def test_accept_refuses_a_token_the_mask_forbade(tokenizer):
    constraint = ConstraintSpec.for_request(tokenizer, {"type": "json_object"}).new()
    mask = constraint.allowed_mask(tokenizer.vocab_size)
    forbidden = int((~mask).nonzero()[0])
    assert mask[tokenizer.encode("{")[0]]
    with pytest.raises(AssertionError, match="not allowed"):
        constraint.accept(forbidden)
    with pytest.raises(AssertionError):
        ConstraintSpec.for_request(tokenizer, {"type": "json_object"}).new().accept(tokenizer.vocab_size + 3)


def test_batch_mask_equals_the_per_sequence_masks(tokenizer):
    spec = ConstraintSpec.for_request(tokenizer, json_schema_format(PET_SCHEMA))
    constraints = [spec.new() for _ in range(4)]
    for steps, constraint in zip([0, 3, 9, 20], constraints):
        generator = torch.Generator().manual_seed(steps)
        for _ in range(steps):
            constraint.accept(int(torch.multinomial(constraint.allowed_mask(600).float(), 1, generator=generator)))
    batch = [constraints[0], None, constraints[1], constraints[2], constraints[3]]
    vocab_size = 600  # the model's vocabulary may be wider than the tokenizer's
    masks = allowed_masks(batch, vocab_size)
    assert masks.shape == (5, vocab_size)
    assert masks[1].all()  # unconstrained row
    for row, constraint in zip([0, 2, 3, 4], constraints):
        assert torch.equal(masks[row], constraint.allowed_mask(vocab_size))
    assert len({tuple(m.tolist()) for m in masks}) == 5  # the states really differ


def test_n_sequences_share_one_compiled_spec_but_not_their_state(tokenizer):
    spec = ConstraintSpec.for_request(tokenizer, {"type": "json_object"})
    first, second = spec.new(), spec.new()
    for token in tokenizer.encode('{"a": 1'):
        first.accept(token)
    assert not torch.equal(first.allowed_mask(512), second.allowed_mask(512))
    assert torch.equal(second.allowed_mask(512), spec.new().allowed_mask(512))


def test_llg_tokenizer_is_built_once_per_tokenizer(tokenizer):
    assert llg_tokenizer(tokenizer) is llg_tokenizer(tokenizer)
    assert sorted(llg_tokenizer(tokenizer).eos_tokens) == sorted(tokenizer.stop_ids)


@pytest.mark.parametrize("response_format", [None, {"type": "text"}])
def test_free_text_needs_no_constraint(tokenizer, response_format):
    assert ConstraintSpec.for_request(tokenizer, response_format) is None
    assert ConstraintSpec.for_request(tokenizer, response_format, tools=[], tool_choice="none") is None


@pytest.mark.parametrize("response_format, param, words", [
    ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "objectx"}}},
     "response_format.json_schema.schema", "objectx"),
    ({"type": "json_schema", "json_schema": {"name": "x", "schema": {
        "type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}}}},
     "response_format.json_schema.schema", "missing"),
    ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "string", "format": "color"}}},
     "response_format.json_schema.schema", "color"),
    ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "array", "uniqueItems": True}}},
     "response_format.json_schema.schema", "uniqueItems"),
    ({"type": "json_schema", "json_schema": {"name": "x", "schema": OVERLAPPING_ONE_OF}},
     "response_format.json_schema.schema", "oneOf"),
    ({"type": "json_schema", "json_schema": {"name": "x", "schema": ["not", "an", "object"]}},
     "response_format.json_schema.schema", "JSON Schema object"),
    ({"type": "json_schema", "json_schema": {"schema": {"type": "object"}}}, "response_format.json_schema.name",
     "required"),
    ({"type": "json_schema"}, "response_format.json_schema", "'name' and 'schema'"),
    ({"type": "yaml"}, "response_format.type", "'yaml'"),
    ("json", "response_format", "object"),
])
def test_bad_response_format_names_the_field(tokenizer, response_format, param, words):
    with pytest.raises(InvalidField) as error:
        ConstraintSpec.for_request(tokenizer, response_format)
    assert error.value.param == param
    assert str(error.value).startswith(f"{param}: ") and words in str(error.value)
    assert isinstance(error.value, hepta.HeptaError)


def test_schema_options_can_ask_to_enforce_an_overlapping_one_of_as_any_of(tokenizer):
    schema = {**OVERLAPPING_ONE_OF, "x-guidance": {"coerce_one_of": True, "whitespace_flexible": True}}
    constraint = ConstraintSpec.for_request(tokenizer, json_schema_format(schema)).new()
    for token in tokenizer.encode('{"a": 1'):
        constraint.accept(token)
    assert not constraint.allowed_mask(tokenizer.vocab_size)[tokenizer.encode(" ")[0]]  # the layout stays ours


def test_schema_with_refs_and_defs_validates(model, tokenizer):
    schema = {"$defs": {"point": {"type": "object", "properties": {"x": {"type": "integer", "minimum": -9,
                                                                          "maximum": 9},
                                                                    "y": {"type": "integer", "minimum": -9,
                                                                          "maximum": 9}},
                                  "required": ["x", "y"], "additionalProperties": False}},
              "type": "object", "properties": {"path": {"type": "array", "items": {"$ref": "#/$defs/point"},
                                                        "minItems": 2, "maxItems": 4}},
              "required": ["path"], "additionalProperties": False}
    spec = ConstraintSpec.for_request(tokenizer, json_schema_format(schema))
    for seed in SEEDS:
        out = engine_generate(model, tokenizer, chat_prompt(tokenizer), spec, MAX_TOKENS,
                              SamplingParams(temperature=1.0, seed=seed))
        jsonschema_rs.validator_for(schema).validate(json.loads(out.text))


@pytest.mark.parametrize("kind", ["hf_tokenizer", "sentencepiece_tokenizer"])
def test_hugging_face_tokenizer(model, kind, request):
    hf_tokenizer = request.getfixturevalue(kind)
    spec = ConstraintSpec.for_request(hf_tokenizer, json_schema_format(PET_SCHEMA))
    validator = jsonschema_rs.validator_for(PET_SCHEMA)
    for seed in SEEDS:
        out = engine_generate(model, hf_tokenizer, chat_prompt(hf_tokenizer), spec, MAX_TOKENS,
                              SamplingParams(temperature=1.0, seed=seed))
        assert out.finish_reason == "stop", out.text
        validator.validate(json.loads(out.text))
        assert max(out.token_ids) < hf_tokenizer.vocab_size
    for seed in SEEDS:  # the mask's invariants with a model vocabulary wider than the tokenizer
        random_walk(spec, hf_tokenizer, vocab_size=MICRO["vocab_size"], seed=seed)
