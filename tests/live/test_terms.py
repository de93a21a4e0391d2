"""Terms of a post: hashtags, English words without stopwords, Japanese noun compounds."""

from __future__ import annotations

from hepta.live.terms import extract_terms, japanese_nouns, japanese_query_pieces, normalize


def test_english_words_hashtags_and_what_is_left_out():
    terms = extract_terms("RT @nasa: The #Artemis launch is GO for today! https://t.co/abc 2026 it's", "en")
    assert terms == ["#artemis", "launch"]  # no mention, URL, number, stopword or short word


def test_japanese_noun_compounds_and_stopwords():
    assert japanese_nouns("北海道でオーロラが見えた") == ["北海道", "オーロラ"]
    assert japanese_nouns("大規模な通信障害が発生") == ["大規模", "通信障害", "発生"]
    assert japanese_nouns("今日はこと") == []  # stopwords only
    terms = extract_terms("速報：関東の大雪で新幹線が遅延 #大雪", "ja")
    assert terms[0] == "#大雪" and {"関東", "大雪", "新幹線", "遅延"} <= set(terms)


def test_japanese_runs_are_analysed_whatever_the_language_code():
    assert "花火大会" in extract_terms("Tonight 花火大会 in Tokyo", "en")
    assert extract_terms("花火大会", None) == ["花火大会"]


def test_normalize_folds_width_and_case():
    assert normalize("ＡＩ　ﾃｽﾄ Ｍｏｄｅｌ") == "ai テスト model"
    assert extract_terms("ＡＩ　Ｍｏｄｅｌｓ", "en") == ["models"]


def test_query_pieces_cut_at_particles_and_drop_question_words():
    assert japanese_query_pieces("地震の影響") == ["地震", "影響"]
    assert japanese_query_pieces("東京都") == ["東京都"]
    assert japanese_query_pieces("地震の最新情報", drop_stopwords=True) == ["地震"]
