"""Incremental decoding gives exactly the full decode, cut at the first stop string, whatever the chunking."""

import pytest

from hepta.infer.stream_text import StreamingText
from hepta.tokenizer import Tokenizer

TEXTS = ["def read(path):\n    return open(path).read()\n", "東京都で大きな地震がありました 🎉👩‍👩‍👧 café\r\n",
         "x = {'a': 1, 'b': [2, 3]}  # naïve"]


@pytest.fixture(scope="module")
def tokenizer(corpus):
    return Tokenizer.train([f.read_text() for f in sorted(corpus.iterdir())] + TEXTS * 20, text_vocab_size=400)


@pytest.mark.parametrize("stop", [(), ("地震",), ("open(", "never"), ("\n",), ("👩",)])
def test_deltas_add_up_to_the_full_decode_cut_at_the_first_stop(tokenizer, stop):
    for text in TEXTS:
        ids = tokenizer.encode(text * 3)
        full = tokenizer.decode(ids)
        hits = [full.find(s) for s in stop if s in full]
        expected = full[:min(hits)] if hits else full
        streaming, out, seen = StreamingText(tokenizer, stop), [], []
        for token in ids:
            seen.append(token)
            out.append(streaming.push(seen))
            assert not any(s in "".join(out) for s in stop)  # a stop string never leaks
            if streaming.final_text is not None:
                break
        out.append(streaming.finish(seen))
        assert "".join(out) == expected
