"""Terms of a post for trends and topics: hashtags, English words, Japanese nouns.

English words come from a regular expression (letters, digits, inner apostrophes and hyphens),
lower-cased, without stopwords, URLs, mentions or bare numbers. Japanese text has no spaces, so
its words come from janome's morphological analysis (a pure-Python MeCab-compatible analyser
with the IPA dictionary): nouns are kept, and runs of nouns are joined into one compound term
("新型" + "ロケット" -> "新型ロケット") because a trend is usually named by the compound. Hashtags
keep their "#" so that "#ai" and "ai" stay distinguishable in a trend list.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

# Hiragana, katakana (with the prolonged sound mark) and CJK ideographs (with the iteration mark).
CJK_CHAR = "\u3041-\u309f\u30a0-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3005\uff66-\uff9f"
_CJK = re.compile(f"[{CJK_CHAR}]")
_URL = re.compile(r"https?://\S+")
_MENTION = re.compile(r"@\w+")
_HASHTAG = re.compile(r"[#＃](\w+)")
_WORD = re.compile(r"[a-z0-9]+(?:['’-][a-z0-9]+)*")

EN_STOPWORDS = frozenset("""
a about above after again against all also am an and any are aren't as at be because been before being below
between both but by can can't cannot could couldn't did didn't do does doesn't doing don't down during each few
for from further get gets got had hadn't has hasn't have haven't having he he'd he'll he's her here here's hers
herself him himself his how how's i i'd i'll i'm i've if in into is isn't it it's its itself just let's like me
more most mustn't my myself new no nor not now of off on once one only or other ought our ours ourselves out
over own really rt same say says said shan't she she'd she'll she's should shouldn't so some such than that
that's the their theirs them themselves then there there's these they they'd they'll they're they've this those
through to today too under until up us very via was wasn't we we'd we'll we're we've were weren't what what's
when when's where where's which while who who's whom why why's will with won't would wouldn't you you'd you'll
you're you've your yours yourself yourselves amp just still even much many going go know think right people
time yes yeah lol ok okay via im dont cant got thing things way day
""".split())

# Nouns that carry no topic: formal nouns, pronoun-like words and time words that appear everywhere.
JA_STOPWORDS = frozenset("""
こと もの ため よう これ それ あれ どれ ここ そこ どこ 私 僕 俺 自分 みんな 皆 今日 今 さん ちゃん くん 様 方 人
感じ 気 時 中 上 下 前 後 的 化 性 者 件 系 回 年 月 日 時間 分 秒 本当 ほんと 本日 明日 昨日 今回 今年 何 なに
なん ところ とき わけ はず つもり みたい 笑 www ｗ 一 二 三 みな 皆さん 方々 全部 全て すべて 以上 以下
""".split())

# janome parts of speech that name a thing; 非自立 (formal), 代名詞 (pronoun), 数 (number) and 接尾 (suffix) do not
# on their own, though a suffix still extends the compound it follows.
_JA_NOUN_SKIP = ("非自立", "代名詞", "数")


def normalize(text: str) -> str:
    """NFKC (full-width Latin and digits to ASCII, half-width katakana to full-width) and lower case."""
    return unicodedata.normalize("NFKC", text).lower()


def has_japanese(text: str) -> bool:
    return _CJK.search(text) is not None


@lru_cache(maxsize=1)
def janome_tokenizer():
    from janome.tokenizer import Tokenizer

    return Tokenizer()


def japanese_nouns(text: str) -> list[str]:
    """Noun compounds of Japanese text, in order (janome's IPA-dictionary analysis)."""
    terms: list[str] = []
    compound: list[str] = []
    prefix = ""  # 接頭詞 such as 大 in 大規模 joins the noun that follows it
    for token in janome_tokenizer().tokenize(text):
        pos = token.part_of_speech.split(",")
        if pos[0] == "名詞" and pos[1] not in _JA_NOUN_SKIP and _CJK.search(token.surface):
            if pos[1] == "接尾" and not compound:
                continue
            compound.append(prefix + token.surface)
            prefix = ""
            continue
        if compound:
            terms.append("".join(compound))
            compound = []
        prefix = token.surface if pos[0] == "接頭詞" and _CJK.search(token.surface) else ""
    if compound:
        terms.append("".join(compound))
    return [t for t in terms if t not in JA_STOPWORDS and (len(t) > 1 or not _is_kana(t))]


# Words of a Japanese question that ask for a search but name nothing to look for.
JA_QUERY_STOPWORDS = frozenset("""
最新 情報 最新情報 ニュース 速報 話題 反応 評判 意見 最近 今日 投稿 ツイート ポスト 状況 様子 教え 知り 言っ 思っ
みんな 人々 どう 何 なに いる ある する なる れる 今 いま 現在 について 関する 関し
""".split())
_JA_CONTENT_POS = ("名詞", "動詞", "形容詞", "接頭詞", "副詞")


def japanese_query_pieces(run: str, drop_stopwords: bool = False) -> list[str]:
    """A Japanese run of a query cut at particles, auxiliaries and symbols ("地震の影響" -> 地震, 影響).

    The pieces keep their compounds whole ("東京都", "寝落ち"), so each still matches as one substring.
    """
    pieces: list[str] = []
    piece = ""
    for token in janome_tokenizer().tokenize(run):
        pos = token.part_of_speech.split(",")
        if pos[0] in _JA_CONTENT_POS and pos[1] != "非自立":
            piece += token.surface
            continue
        if piece:
            pieces.append(piece)
        piece = ""
    if piece:
        pieces.append(piece)
    if drop_stopwords:
        pieces = [p for p in pieces if p not in JA_QUERY_STOPWORDS]
    return pieces


def _is_kana(term: str) -> bool:
    return all("\u3041" <= c <= "\u30ff" for c in term)


def extract_terms(text: str, lang: str | None = None) -> list[str]:
    """The distinct terms of one post, hashtags first ("#tag"), then words or Japanese nouns.

    lang is the post's language code; Japanese analysis runs on any text holding Japanese
    characters whatever the code says, since X's detection often tags short Japanese posts "und".
    """
    text = normalize(_URL.sub(" ", text))
    text = _MENTION.sub(" ", text)
    seen: dict[str, None] = {}
    for tag in _HASHTAG.findall(text):
        seen["#" + tag] = None
    body = _HASHTAG.sub(" ", text)
    for word in _WORD.findall(body):
        if len(word) > 2 and word not in EN_STOPWORDS and not word.isdigit():
            seen[word] = None
    if lang == "ja" or has_japanese(body):
        for term in japanese_nouns(body):
            seen[term] = None
    return list(seen)


@lru_cache(maxsize=65536)
def cached_terms(text: str, lang: str | None) -> tuple[str, ...]:
    """extract_terms, remembered: reposts and re-deliveries repeat texts, so each is analysed once."""
    return tuple(extract_terms(text, lang))
