"""What the synthetic stream talks about: everyday topics and burst events, in English and Japanese.

Each topic has hashtags and subjects; a post is a subject with an opinion (positive, negative
or neutral, worded so the sentiment lexicons of each language read it that way). Burst events
use words that everyday topics never use, so a detected trend can be checked against the
ground truth without ambiguity.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Topic:
    name: str
    lang: str
    hashtags: tuple[str, ...]
    subjects: tuple[str, ...]


@dataclass(frozen=True)
class BurstEvent:
    term: str  # the word a trend detector should surface
    hashtag: str
    lang: str
    subjects: tuple[str, ...]


TOPICS = (
    Topic("ai", "en", ("AI", "MachineLearning"), (
        "the new open AI model", "GPU prices for training", "the latest AI benchmark results",
        "running a language model on my laptop", "this AI coding assistant")),
    Topic("football", "en", ("football", "ChampionsLeague"), (
        "last night's match", "the penalty decision", "the new striker", "the league table", "the transfer window")),
    Topic("markets", "en", ("stocks", "markets"), (
        "the Fed rate decision", "tech stocks today", "the bond market", "my portfolio", "the earnings season")),
    Topic("climate", "en", ("climate", "COP"), (
        "the climate summit", "the heatwave forecast", "new solar capacity", "the emissions report")),
    Topic("phones", "en", ("smartphone", "tech"), (
        "the new phone launch", "the battery life on this phone", "the camera upgrade", "the price of the new model")),
    Topic("space", "en", ("space", "rocket"), (
        "the rocket launch", "the moon mission", "the satellite images", "the booster landing")),
    Topic("anime", "ja", ("アニメ",), ("新しいアニメの第1話", "今期のアニメ", "劇場版の予告", "声優の発表")),
    Topic("ramen", "ja", ("ラーメン",), ("駅前のラーメン屋", "新作の味噌ラーメン", "深夜のラーメン", "行列のできる店")),
    Topic("baseball", "ja", ("野球",), ("昨日の試合", "大谷選手のホームラン", "日本シリーズ", "新しい監督")),
    Topic("shinkansen", "ja", ("新幹線",), ("新幹線の遅延", "東京駅の混雑", "新しい車両", "帰省の切符")),
    Topic("weather", "ja", ("天気",), ("明日の天気", "週末の雨", "今朝の寒さ", "梅雨入りのニュース")),
    Topic("markets_ja", "ja", ("日経平均",), ("日経平均", "円安", "決算発表", "新NISA")),
)

BURST_EVENTS = (
    BurstEvent("eclipse", "Eclipse", "en", ("the eclipse", "the solar eclipse right now", "eclipse photos")),
    BurstEvent("blackout", "Blackout", "en", ("the blackout downtown", "this citywide blackout", "blackout updates")),
    BurstEvent("outage", "CloudOutage", "en", ("the cloud outage", "this outage", "the outage status page")),
    BurstEvent("meteor", "MeteorShower", "en", ("the meteor shower", "meteor sightings tonight", "that meteor")),
    BurstEvent("merger", "AirlineMerger", "en", ("the airline merger", "the merger announcement", "merger rumours")),
    BurstEvent("オーロラ", "オーロラ", "ja", ("北海道のオーロラ", "オーロラの写真", "オーロラ")),
    BurstEvent("停電", "停電", "ja", ("近所の停電", "大規模な停電", "停電")),
    BurstEvent("大雪", "大雪", "ja", ("関東の大雪", "大雪の影響", "大雪")),
    BurstEvent("花火", "花火大会", "ja", ("花火大会", "今夜の花火", "花火")),
    BurstEvent("通信障害", "通信障害", "ja", ("スマホの通信障害", "通信障害", "大規模な通信障害")),
)

OPINIONS = {
    "en": {
        "positive": ("is amazing", "looks great", "is really impressive", "made my day", "is the best news this week"),
        "negative": ("is terrible", "is so disappointing", "was a complete mess", "is a disaster", "made me angry"),
        "neutral": ("is happening today", "was announced this morning", "is on the news", "starts at noon",
                    "is being discussed"),
    },
    "ja": {
        "positive": ("が最高！", "、本当に良かった", "が楽しみすぎる", "に感動した", "、嬉しい"),
        "negative": ("がひどい…", "、残念すぎる", "にがっかり", "は最悪", "、本当に困る"),
        "neutral": ("について", "のニュースを見た", "が発表された", "は今日から", "を確認中"),
    },
}

OPENERS = {"en": ("", "", "", "Honestly, ", "Wow, ", "Just saw: ", "Reminder: "), "ja": ("", "", "", "速報：", "え、")}

REPLIES = {
    "en": ("agreed!", "not sure about that", "source?", "this is so true", "I disagree", "great point"),
    "ja": ("それな", "本当にそう思う", "ソースは？", "同意です", "違うと思う", "なるほど"),
}

QUOTE_COMMENTS = {
    "en": ("This.", "Worth reading:", "Big if true:", "Can't believe this:"),
    "ja": ("これ", "読んでほしい", "本当？", "すごい"),
}

NAME_PARTS = {
    "en": (("alex", "sam", "jordan", "taylor", "morgan", "casey", "riley", "jamie", "chris", "pat", "dana", "lee"),
           ("news", "dev", "fan", "daily", "writes", "codes", "runs", "trades", "takes", "world", "hq", "lab")),
    "ja": (("haruto", "yui", "sota", "hina", "ren", "mei", "yuto", "sakura", "kaito", "aoi", "riku", "nana"),
           ("_jp", "_tokyo", "_osaka", "_news", "_memo", "_log", "_diary", "_fan", "_dev", "_nikki", "", "_official")),
}
