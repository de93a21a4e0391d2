"""The chat page at `/`, driven in a real browser: Debian's Chromium through Playwright for Python (never a
downloaded browser build). Screenshots are kept in test-artifacts/page/."""

import io
import json
import shutil
from pathlib import Path

import pytest

from conftest import start_server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no system Chromium: install Debian's with "
                                                         "`apt-get install chromium` (make test does, as root)")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "page"
QUESTION = "What are people saying about the rocket launch today?"


@pytest.fixture(scope="module")
def server(model_dir, live_db):
    server = start_server(model_dir, live_db=str(live_db))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    context.route("https://x.com/**", lambda route: route.fulfill(body="a post on X", content_type="text/plain"))
    page = context.new_page()
    yield page
    context.close()


def open_page(page, server):
    response = page.goto(server.url + "/")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    page.wait_for_selector("#model option[value=micro]", state="attached")
    return response


def steady_answers(page, model_dir):
    """Requests from the page made greedy and 64 tokens long (the end tokens banned), so the answer has many
    pieces to stream whatever this untrained model samples."""
    from hepta.tokenizer import Tokenizer

    tokenizer = Tokenizer.load(model_dir)
    ends = {str(i): -100 for i in tokenizer.stop_ids}

    def steady(route):
        body = json.loads(route.request.post_data)
        route.continue_(post_data=json.dumps({**body, "temperature": 0, "max_tokens": 64, "logit_bias": ends}))

    page.route("**/v1/chat/completions", steady)


def test_a_message_streams_its_answer_with_citations_that_open_the_posts(page, server, model_dir):
    steady_answers(page, model_dir)
    open_page(page, server)
    page.select_option("#trend-window", "3h")  # the window in which the sample posts have trends
    page.wait_for_selector("#trend-list li button")  # the trends panel, fed by /v1/trends
    page.check("#search")
    page.fill("#prompt", QUESTION)
    page.evaluate("""() => {  // the lengths the answer has on screen while it streams in
        window.lengths = new Set();
        new MutationObserver(() => {
            const answer = document.querySelector('#log li.assistant .body');
            if (answer) window.lengths.add(answer.textContent.length);
        }).observe(document.getElementById('log'), {childList: true, subtree: true, characterData: true});
    }""")
    page.press("#prompt", "Enter")  # the keyboard sends
    citation = page.wait_for_selector("#log li.assistant .citations a", timeout=60000)
    answer = page.text_content("#log li.assistant .body")
    # it grew piece by piece: shown at some length before its last (a stream that falls behind may deliver many
    # tokens in one read, so not every token is a separate length on screen)
    assert answer.strip() and page.evaluate("[...window.lengths].filter(n => n > 0).length") >= 2
    assert page.text_content("#log li.user .body").strip() == QUESTION
    with page.context.expect_page() as opened:
        citation.click()
    assert opened.value.url.startswith("https://x.com/i/status/")
    page.screenshot(path=str(ARTIFACTS / "answer-with-citations.png"), full_page=True)


def test_an_attached_image_is_sent_as_an_image_part_and_the_servers_refusal_is_shown(page, server, tmp_path):
    from PIL import Image

    open_page(page, server)
    png = tmp_path / "digit.png"
    Image.new("RGB", (8, 8), "white").save(png)
    page.set_input_files("#attach", str(png))
    page.wait_for_selector("#attached:has-text('digit.png')")
    page.fill("#prompt", "What is in this picture?")
    with page.expect_request("**/v1/chat/completions") as sent:
        page.click("#send")
    parts = json.loads(sent.value.post_data)["messages"][-1]["content"]
    assert parts[1]["type"] == "image_url" and parts[1]["image_url"]["url"].startswith("data:image/png;base64,")
    # this text-only model refuses images: the page says why, in one sentence, and keeps working
    page.wait_for_selector("#error:not([hidden])")
    assert "reads text only" in page.text_content("#error")


def test_answers_and_trends_are_rendered_as_text_never_as_html(page, server):
    hostile = '<script>window.pwned = 1</script><img src=x onerror="window.pwned = 2"> **bold** `code`'
    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "micro",
             "choices": [{"index": 0, "delta": {"content": hostile}, "finish_reason": None}]}
    stream = f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n"
    page.route("**/v1/chat/completions", lambda route: route.fulfill(body=stream, content_type="text/event-stream"))
    page.route("**/v1/trends**", lambda route: route.fulfill(json={"trends": [{"term": '<img src=y onerror="window.pwned=3">'}]}))
    open_page(page, server)
    page.wait_for_selector("#trend-list button")
    page.fill("#prompt", "hello")
    page.press("#prompt", "Enter")
    page.wait_for_selector("#log li.assistant strong")
    body = page.query_selector("#log li.assistant .body")
    assert "<script>window.pwned = 1</script>" in body.text_content()  # shown as the text it is
    assert body.query_selector("script") is None and body.query_selector("img") is None
    assert page.text_content("#trend-list button") == '<img src=y onerror="window.pwned=3">'
    assert page.evaluate("window.pwned") is None


def test_a_post_with_a_script_and_an_onerror_attribute_is_shown_as_text(browser, model_dir, tmp_path):
    from hepta.cli import main

    hostile = '<script>window.pwned = 1</script> <img src=x onerror="window.pwned = 2"> rocketlaunch'
    post = {"data": {"id": "2011589180970237999", "text": hostile, "author_id": "42", "lang": "en",
                     "created_at": "2026-01-15T00:00:08.000Z", "edit_history_tweet_ids": ["2011589180970237999"],
                     "public_metrics": {"retweet_count": 0, "reply_count": 0, "like_count": 1, "quote_count": 0}},
            "includes": {"users": [{"id": "42", "name": "Mallory", "username": "mallory"}]}}
    stream = tmp_path / "hostile.jsonl"
    stream.write_text(json.dumps(post) + "\n")
    assert main(["live", "ingest", "--source", f"jsonl:{stream}", "--db", str(tmp_path / "posts.db"), "--quiet"]) == 0
    server = start_server(model_dir, live_db=str(tmp_path / "posts.db"))
    context = browser.new_context()
    page = context.new_page()
    try:
        open_page(page, server)
        page.fill("#post-query", "rocketlaunch")
        page.press("#post-query", "Enter")
        shown = page.wait_for_selector("#post-results li")
        assert hostile in shown.text_content() and "@mallory" in shown.text_content()
        assert shown.query_selector("script") is None and shown.query_selector("img") is None
        assert page.evaluate("window.pwned") is None
    finally:
        context.close()
        server.stop()


def test_an_answer_can_be_spoken_and_played_inline(page, server, model_dir):
    import soundfile

    wav = io.BytesIO()
    soundfile.write(wav, [0.0] * 2400, 24000, format="WAV", subtype="PCM_16")
    spoken = []

    def speech(route):  # this text model has no voice: the speech endpoint answers as a model with one would
        spoken.append(json.loads(route.request.post_data))
        route.fulfill(body=wav.getvalue(), content_type="audio/wav")

    steady_answers(page, model_dir)
    page.route("**/v1/audio/speech", speech)
    open_page(page, server)
    page.fill("#prompt", "Say hello")
    page.press("#prompt", "Enter")
    page.click("#log li.assistant button.speak")
    audio = page.wait_for_selector("#log li.assistant audio")
    assert audio.get_attribute("src").startswith("blob:")
    assert spoken[0]["model"] == "micro" and spoken[0]["input"].strip()  # the answer's own text
    assert page.evaluate("el => el.duration", audio) == pytest.approx(0.1, abs=0.02)


def test_the_page_is_labelled_and_readable_at_phone_width(page, server):
    page.set_viewport_size({"width": 375, "height": 740})
    open_page(page, server)
    unlabelled = page.evaluate("""() => [...document.querySelectorAll('input, select, textarea, button')]
        .filter(el => !(el.labels && el.labels.length) && !el.textContent.trim() && !el.getAttribute('aria-label'))
        .map(el => el.id)""")
    assert unlabelled == []
    assert page.evaluate("document.documentElement.scrollWidth") <= 375  # nothing runs off the side
    page.focus("#prompt")
    page.keyboard.press("Tab")  # the controls are reachable by keyboard
    assert page.evaluate("document.activeElement.id") == "attach"
    page.screenshot(path=str(ARTIFACTS / "phone-width.png"), full_page=True)


def test_the_api_key_field_unlocks_a_keyed_server_and_is_stored_only_when_asked(browser, model_dir, tmp_path):
    from hepta.serve.keys import KeyStore

    with KeyStore(tmp_path / "keys.db", create=True) as keys:
        key = keys.add("page")
    server = start_server(model_dir, api_keys=str(tmp_path / "keys.db"))
    context = browser.new_context()
    page = context.new_page()
    try:
        page.goto(server.url + "/")
        page.wait_for_selector("#error:not([hidden])")
        assert "API key" in page.text_content("#error")
        page.click("#key-box summary")
        page.fill("#api-key", key)
        page.dispatch_event("#api-key", "change")
        page.wait_for_selector("#model option[value=micro]", state="attached")
        assert page.evaluate("localStorage.getItem('hepta-api-key')") is None  # kept in the page only
        page.check("#remember-key")
        assert page.evaluate("localStorage.getItem('hepta-api-key')") == key
    finally:
        context.close()
        server.stop()
