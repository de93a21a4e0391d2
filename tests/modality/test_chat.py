import torch

from hepta.modality.chat import ImageCodes, Turn, VideoCodes, encode_chat, image_vocab, video_vocab
from hepta.modality.video_span import StampForm
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


def test_a_video_is_its_frames_as_image_spans_each_stamped_with_its_time():
    tokenizer = _tokenizer()
    video = video_vocab(tokenizer, 4)
    frames = torch.randint(0, 125, (3, 4, 4))
    part = VideoCodes(frames, (0.0, 1.0, 62.0))
    ids, _ = encode_chat([Turn("user", (part, "Which digit appeared first?"))], tokenizer, video.images)
    start, end = ids.index(video.start_id), ids.index(video.end_id)
    span = ids[start:end + 1]
    assert span.count(video.frame_id) == 3
    assert [g.tolist() for g in video.images.find_spans(span)] == frames.tolist()
    stamps = [tokenizer.decode(span[f + 1:s]) for f, s in zip(
        [i for i, t in enumerate(span) if t == video.frame_id],
        [i for i, t in enumerate(span) if t == video.images.start_id])]
    assert stamps == ["0:00", "0:01", "1:02"]
    without, _ = encode_chat([Turn("user", (VideoCodes(frames, part.times, with_time=False),))], tokenizer,
                             video.images)
    frame_ids = [i for i, t in enumerate(without) if t == video.frame_id]
    assert all(without[i + 1] == video.images.start_id for i in frame_ids)  # no timestamp, nothing else changed
    assert len(span) - (without.index(video.end_id) - without.index(video.start_id) + 1) == \
        sum(len(tokenizer.encode(s)) for s in stamps)
    assert video.frame_length(tokenizer.encode, 62.0) == 1 + len(tokenizer.encode("1:02")) + video.images.span_length


def test_timestamps_written_a_character_a_token_leave_two_digit_seconds_to_the_captions():
    tokenizer = Tokenizer.train(TEXTS + ["0:14 0:42 1:14 14 42"] * 30, text_vocab_size=300).with_image_codes(125)
    video = video_vocab(tokenizer, 4)
    assert len(tokenizer.encode("14")) == 1  # the text tokenizer has a token for the seconds "14"
    frames = torch.randint(0, 125, (3, 4, 4))
    times = (14.0, 42.0, 74.0)
    as_text = VideoCodes(frames, times, captions=("1=7", "2=3 * 0m14", "-"))
    by_character = VideoCodes(frames, times, captions=as_text.captions, stamps=StampForm.DIGITS)
    text_ids, _ = encode_chat([Turn("user", ("When did the 7 first appear?", as_text))], tokenizer, video.images)
    ids, written = encode_chat([Turn("user", ("When did the 7 first appear?", by_character))], tokenizer,
                               video.images)
    fourteen = tokenizer.encode("14")[0]
    # the stamps of 0:14 and 1:14 hold "14" as text; a character a token, only the caption that writes it does
    assert text_ids.count(fourteen) == 3
    assert [written[i] for i, t in enumerate(ids) if t == fourteen] == [True]
    frame_ids = [i for i, t in enumerate(ids) if t == video.frame_id]
    assert [tokenizer.decode(ids[i + 1:i + 5]) for i in frame_ids] == ["0:14", "0:42", "1:14"]
    assert all(len(tokenizer.decode([t])) == 1 for i in frame_ids for t in ids[i + 1:i + 5])
    # one token more a frame than as text here (seconds were one token), counted alike by span_length
    span = ids[ids.index(video.start_id):ids.index(video.end_id) + 1]
    captions = sum(len(tokenizer.encode(c)) + 1 for c in as_text.captions)  # each closed by <|end|>
    assert len(span) == video.span_length(tokenizer.encode, 3, 74.0, stamps=StampForm.DIGITS) + captions
    assert len(span) - (text_ids.index(video.end_id) - text_ids.index(video.start_id) + 1) == 3


def test_time_tokens_leave_plain_digits_to_the_times_the_model_writes():
    tokenizer = Tokenizer.train(TEXTS + ["0:14 0:42 1:14"] * 30, text_vocab_size=300,
                                digit_tokens=True).with_image_codes(125)
    video = video_vocab(tokenizer, 4)
    frames = torch.randint(0, 125, (3, 4, 4))
    part = VideoCodes(frames, (14.0, 42.0, 74.0), captions=("1=7", "2=3 * 0m14", "-"), stamps=StampForm.TIME)
    ids, written = encode_chat([Turn("user", ("When did the 7 first appear?", part))], tokenizer, video.images)
    time_ids = [tokenizer.special_ids[f"<|time_{d}|>"] for d in range(10)]
    frame_ids = [i for i, t in enumerate(ids) if t == video.frame_id]
    colon = tokenizer.encode(":")
    assert [ids[i + 1:i + 5] for i in frame_ids] == [[time_ids[0], *colon, time_ids[1], time_ids[4]],
                                                     [time_ids[0], *colon, time_ids[4], time_ids[2]],
                                                     [time_ids[1], *colon, time_ids[1], time_ids[4]]]
    # the plain "1" and "4" of a time are in the caption the model writes, and nowhere else
    one, four = tokenizer.encode("1")[0], tokenizer.encode("4")[0]
    assert [written[i] for i, t in enumerate(ids) if t in (one, four)] == [True, True, True]
    span = ids[ids.index(video.start_id):ids.index(video.end_id) + 1]
    captions = sum(len(tokenizer.encode(c)) + 1 for c in part.captions)
    assert len(span) == video.span_length(tokenizer.encode, 3, 74.0, stamps=StampForm.TIME) + captions


def test_tens_tokens_tell_the_tens_of_a_stamps_seconds_from_its_units_by_kind():
    tokenizer = Tokenizer.train(TEXTS + ["0:14 0:41 1:14"] * 30, text_vocab_size=300).with_image_codes(125)
    video = video_vocab(tokenizer, 4)
    frames = torch.randint(0, 125, (3, 4, 4))
    part = VideoCodes(frames, (14.0, 41.0, 74.0), captions=("1=7", "2=3 * 0m14", "-"), stamps=StampForm.TENS)
    ids, written = encode_chat([Turn("user", ("When did the 7 first appear?", part))], tokenizer, video.images)
    time_ids = [tokenizer.special_ids[f"<|time_{d}|>"] for d in range(10)]
    tens_ids = [tokenizer.special_ids[f"<|tens_{d}|>"] for d in range(6)]
    frame_ids = [i for i, t in enumerate(ids) if t == video.frame_id]
    colon = tokenizer.encode(":")
    # 0:14 and 0:41 hold the same two digits, as tokens of different kinds: their order is in the ids themselves
    assert [ids[i + 1:i + 5] for i in frame_ids] == [[time_ids[0], *colon, tens_ids[1], time_ids[4]],
                                                     [time_ids[0], *colon, tens_ids[4], time_ids[1]],
                                                     [time_ids[1], *colon, tens_ids[1], time_ids[4]]]
    # the mark's seconds are one text token, which no stamp holds
    fourteen, = tokenizer.encode("14")
    assert [written[i] for i, t in enumerate(ids) if t == fourteen] == [True]
    span = ids[ids.index(video.start_id):ids.index(video.end_id) + 1]
    captions = sum(len(tokenizer.encode(c)) + 1 for c in part.captions)
    assert len(span) == video.span_length(tokenizer.encode, 3, 74.0, stamps=StampForm.TENS) + captions
    # from an hour on the minutes have two digits too, and only the seconds' tens is a tens token
    assert video.timestamp(3725.0, tokenizer.encode, StampForm.TENS) == [
        time_ids[1], *colon, time_ids[0], time_ids[2], *colon, tens_ids[0], time_ids[5]]
