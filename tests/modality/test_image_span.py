import torch

from hepta.modality.image_span import ImageVocab

VOCAB = ImageVocab(start_id=100, end_id=101, row_id=102, code_start=200, num_codes=50, grid=3)


def test_a_span_is_start_rows_with_markers_end():
    codes = torch.arange(9).view(3, 3)
    ids = VOCAB.span_ids(codes)
    assert ids == [100, 200, 201, 202, 102, 203, 204, 205, 102, 206, 207, 208, 102, 101]
    assert len(ids) == VOCAB.span_length


def test_find_spans_returns_the_grids_among_text_and_skips_broken_ones():
    a, b = torch.randint(0, 50, (3, 3)), torch.randint(0, 50, (3, 3))
    broken = VOCAB.span_ids(a)[:-1] + [7]  # not closed
    found = VOCAB.find_spans([1, 2] + VOCAB.span_ids(a) + [3] + broken + VOCAB.span_ids(b) + [4])
    assert len(found) == 2 and torch.equal(found[0], a) and torch.equal(found[1], b)


def test_the_grammar_allows_exactly_the_next_piece_of_a_span():
    span = VOCAB.span_ids(torch.zeros(3, 3, dtype=torch.long))
    for k in range(1, len(span)):
        mask = VOCAB.allowed_mask(k, 300)
        assert mask[span[k]]
        if span[k] >= VOCAB.code_start:
            assert mask.sum() == VOCAB.num_codes
        else:
            assert mask.sum() == 1


def test_open_span_position_follows_the_prompt_tail():
    span = VOCAB.span_ids(torch.zeros(3, 3, dtype=torch.long))
    assert VOCAB.open_span_position([5, 6]) == 0
    assert VOCAB.open_span_position([5, 100]) == 1
    assert VOCAB.open_span_position([5] + span[:6]) == 6
    assert VOCAB.open_span_position([5] + span) == 0
    position = 1
    for _ in range(VOCAB.span_length - 1):
        position = VOCAB.next_position(position)
    assert position == 0
