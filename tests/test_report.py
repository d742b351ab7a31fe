"""The HTML report in a real headless Chromium (Debian's chromium and chromium-driver, installed by
.ci/run): its controls switch the maps, it makes no network request, and the commands write it."""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from mmcam.adapters.captioning import CaptionExplanation
from mmcam.adapters.vqa import VQAExplanation
from mmcam.cli import main
from mmcam.explanation import Explanation
from mmcam.report import caption_view, rl_views, vqa_view, write_report
from mmcam.zoo import make_scenes
from tests.hf_tiny import save_vilt_vqa

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
browser_only = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER), reason="needs chromium and chromedriver (apt: chromium chromium-driver)"
)


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1000,900"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)  # no driver download
    yield driver
    driver.quit()


def open_report(browser, path):
    browser.get_log("performance"), browser.get_log("browser")  # drop what earlier pages logged
    browser.get(path.resolve().as_uri())


def requested_urls(browser) -> list[str]:
    """Every URL the page asked the network stack for since it was opened (Chrome's performance log)."""
    urls = []
    for entry in browser.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def assert_offline_and_clean(browser):
    urls = requested_urls(browser)
    assert any(url.startswith("file:") for url in urls), "the performance log saw no request at all"
    assert all(url.split(":")[0] in ("file", "data") for url in urls), urls
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []


def shown(view):
    return view.find_element("css selector", "img.shown").get_attribute("src")


def assert_screenshot(browser, path):
    assert browser.save_screenshot(str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000


def blobs(centers, size=(128, 128)) -> torch.Tensor:
    """(1, K, H, W) maps, one Gaussian blob at each (x, y): distinct, known maps."""
    ys, xs = torch.meshgrid(torch.arange(size[0]), torch.arange(size[1]), indexing="ij")
    return torch.stack([torch.exp(-((xs - x) ** 2 + (ys - y) ** 2) / 300.0) for x, y in centers])[None]


@pytest.fixture(scope="module")
def scene_image():
    return Image.fromarray(make_scenes(1, seed=3, n_objects=(2, 3))[0].image)


@pytest.fixture(scope="module")
def rollout():
    from mmcam.adapters.rl import explain_episodes, make_env
    from mmcam.loading import load_policy

    venv = make_env("mmcam/ShapesReach-v0")
    # seed 77_008: 3 steps, the second of which has an empty Grad-CAM map of the chosen action's logit
    rollout = explain_episodes(
        load_policy("strong", venv),
        venv,
        seed=77_008,
        value=True,
        all_actions=True,
        method="gradcam",
        target="logit",
    )
    assert rollout.episodes[0].empty.tolist() == [False, True, False]
    return rollout


@pytest.fixture(scope="module")
def hand_made_report(tmp_path_factory, scene_image, rollout):
    """A caption view, a VQA view (held in memory, as the demo makes them) and an RL episode's view."""
    words = ["a", "small", "red", "circle", "left", "of", "a", "blue", "square"]
    content = [1, 2, 3, 7, 8]
    caption = Explanation(
        maps=blobs([(20 + 15 * i, 30 + 10 * i) for i in range(len(content))]),
        raw=None,
        scores=torch.tensor([[-0.2, -1.5, -0.1, -3.0, -0.4]]),
        labels=[[words[i] for i in content]],
        indices=[content],
        layer="encoder.-1",
        method="gradcam",
    )
    answers = Explanation(
        maps=blobs([(30, 30), (90, 90), (60, 20), (100, 40)]),
        raw=None,
        scores=torch.tensor([[5.0, 2.0, -2.0, 3.0]]),
        labels=[["red", "blue", "not blue", "red rather than blue"]],
        indices=[[0, 1, 1, None]],
        layer="encoder.-1",
        method="gradcam",
        token_weights=torch.tensor([[0.0, 0.1, 0.9, -0.4, 0.2, 0.0]]).mul(
            torch.tensor([1, -1, 1, 1])[:, None]
        )[None],
    )
    tokens = [None, "what", "color", "is", "it", None]
    views = [
        caption_view("scene.png", scene_image, CaptionExplanation(" ".join(words), words, caption)),
        vqa_view("scene.png", scene_image, VQAExplanation("what color is it", tokens, "red", answers)),
        *rl_views(rollout),
    ]
    return write_report(tmp_path_factory.mktemp("report") / "report.html", views, "hand-made")


@browser_only
def test_classify_command_report_switches_class_maps(browser, tmp_path, capsys):
    folder = tmp_path / "scenes"
    folder.mkdir()
    for i, scene in enumerate(make_scenes(2, seed=7, n_objects=(2, 3))):
        Image.fromarray(scene.image).save(folder / f"scene {i}.png")
    assert main(["classify", str(folder), "--top", "3", "-o", str(tmp_path / "out")]) == 0
    report = tmp_path / "out" / "report.html"
    assert f"report: open {report.resolve()}" in capsys.readouterr().out

    open_report(browser, report)
    views = browser.find_elements("css selector", ".view")
    assert [v.find_element("css selector", "h2").text.split()[:2] for v in views] == [
        ["scene", "0.png"],
        ["scene", "1.png"],
    ]
    buttons = views[1].find_elements("css selector", "button.choice")
    assert len(buttons) == 3 and buttons[0].get_attribute("aria-pressed") == "true"
    before = shown(views[1])
    buttons[2].click()
    assert shown(views[1]) != before and shown(views[1]).startswith("data:image/jpeg;base64,")
    assert buttons[2].get_attribute("aria-pressed") == "true"
    assert buttons[0].get_attribute("aria-pressed") == "false"
    assert views[1].find_element("css selector", ".shown-label").text == buttons[2].get_attribute(
        "data-label"
    )
    assert all(img.get_attribute("alt") for img in browser.find_elements("css selector", "img"))
    assert_screenshot(browser, tmp_path / "classify.png")
    assert_offline_and_clean(browser)


@browser_only
def test_caption_words_show_their_maps_on_hover_and_focus(browser, hand_made_report, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains

    open_report(browser, hand_made_report)
    view = browser.find_element("css selector", '.view[data-task="caption"]')
    words = view.find_elements("css selector", ".caption button.word")
    assert [w.text for w in words] == ["small", "red", "circle", "blue", "square"]
    assert "left" in view.find_element("css selector", ".caption").text  # not explained: plain text
    seen = {shown(view)}
    ActionChains(browser).move_to_element(words[2]).perform()
    assert view.find_element("css selector", ".shown-label").text == "circle"
    seen.add(shown(view))
    browser.execute_script("arguments[0].focus()", words[4])  # keyboard focus shows the map too
    assert view.find_element("css selector", ".shown-label").text == "square"
    seen.add(shown(view))
    assert len(seen) == 3
    assert_screenshot(browser, tmp_path / "caption.png")
    assert_offline_and_clean(browser)


@browser_only
def test_vqa_answer_shows_its_map_counterfactual_and_word_weights(browser, hand_made_report):
    open_report(browser, hand_made_report)
    view = browser.find_element("css selector", '.view[data-task="vqa"]')
    answers = {b.get_attribute("data-label"): b for b in view.find_elements("css selector", "button.choice")}
    assert list(answers) == ["red", "blue", "red rather than blue"]  # 'not blue' belongs to 'blue'
    counter = view.find_element("css selector", "figure.counter")
    assert not counter.is_displayed()
    color = view.find_elements("css selector", ".qword")[1]
    assert "against" not in color.get_attribute("class")
    before = shown(view)
    answers["blue"].click()
    assert shown(view) != before
    assert counter.is_displayed() and counter.find_element("css selector", "figcaption").text == "not blue"
    assert "against" in color.get_attribute("class")
    answers["red rather than blue"].click()
    assert not counter.is_displayed()
    assert_offline_and_clean(browser)


@browser_only
def test_rl_slider_scrubs_through_the_episode(browser, hand_made_report, rollout, tmp_path):
    from selenium.webdriver.common.keys import Keys

    open_report(browser, hand_made_report)
    view = browser.find_element("css selector", '.view[data-task="rl"]')
    slider = view.find_element("css selector", "input.scrubber")
    steps = rollout.episodes[0].steps
    assert slider.get_attribute("max") == str(steps - 1)
    expected = json.loads(view.find_element("css selector", "script.steps").get_attribute("textContent"))
    cursor = view.find_element("css selector", ".chart .cursor")
    positions = []
    for step in range(steps):
        assert view.find_element("css selector", ".step-number").text == f"{step} / {steps - 1}"
        action = rollout.action_names[rollout.episodes[0].trajectory.actions[step]]
        assert view.find_element("css selector", '[data-fact="action"]').text == action
        assert shown(view) == expected[step]["map"]
        assert view.find_element("css selector", "img.frame").get_attribute("src") == expected[step]["frame"]
        others = view.find_elements("css selector", "img.other")  # every action's map, then the value's
        assert [other.get_attribute("src") for other in others] == expected[step]["others"]
        against = view.find_element("css selector", ".step-against")
        assert against.is_displayed() == (step == 1)  # the empty step shows the evidence against
        note = view.find_element("css selector", '[data-fact="map note"]').text
        assert ("empty" in note) == (step == 1)
        positions.append(float(cursor.get_attribute("x1")))
        slider.send_keys(Keys.ARROW_RIGHT)  # the keyboard moves it
    assert positions == sorted(set(positions))  # the chart's cursor follows
    assert_screenshot(browser, tmp_path / "rl.png")
    assert_offline_and_clean(browser)


@browser_only
def test_vqa_command_report_pairs_an_answer_with_why_not(browser, tmp_path, scene_image):
    image = tmp_path / "scene.webp"
    scene_image.save(image)
    folder = save_vilt_vqa(tmp_path / "vilt")
    code = main(
        ["vqa", str(image), "-q", "what color is the circle?", "--model", str(folder), "--top", "2"]
        + ["--answer", "red", "--why-not", "red", "-o", str(tmp_path / "out"), "--json"]
    )
    assert code == 0
    open_report(browser, tmp_path / "out" / "report.html")
    view = browser.find_element("css selector", '.view[data-task="vqa"]')
    red = view.find_element("css selector", 'button.choice[data-label="red"]')
    red.click()
    counter = view.find_element("css selector", "figure.counter")
    assert counter.is_displayed() and counter.find_element("css selector", "figcaption").text == "not red"
    assert len(view.find_elements("css selector", ".qword")) == 6
    assert_offline_and_clean(browser)


def test_report_is_small_and_self_contained(hand_made_report, rollout):
    html = hand_made_report.read_text()
    assert "http://" not in html and "https://" not in html and 'src="data:image/' in html
    assert "Content-Security-Policy" in html
    steps = rollout.episodes[0].steps
    assert hand_made_report.stat().st_size < 30_000 + 2 * 4 * 12_000 + steps * 8_000


def test_the_rl_report_says_which_shape_is_the_agent_and_which_the_goal(hand_made_report, rollout):
    html = hand_made_report.read_text()
    assert "In the frames, the black plus sign is the agent, the red circle its goal" in html
    other = type(rollout)(rollout.policy, "ALE/Pong-v5", rollout.action_names, rollout.episodes)
    assert "In the frames" not in rl_views(other)[0].body


def test_caption_command_report_has_one_button_per_word(tmp_path, capsys):
    from tests.hf_tiny import save_blip_captioner

    image = tmp_path / "gray.png"
    Image.fromarray((np.random.default_rng(2).random((40, 70)) * 255).astype(np.uint8)).save(image)
    folder = save_blip_captioner(tmp_path / "blip")
    argv = ["caption", str(image), "--model", str(folder), "--caption", "a red circle", "-o", str(tmp_path)]
    assert main([*argv, "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["words"] == ["a", "red", "circle"]
    assert {target["score_kind"] for target in record["targets"]} == {"log-probability"}
    main_part = (tmp_path / "report.html").read_text().split("<main>")[1]
    assert main_part.count('class="choice word"') == 3 and main_part.count('aria-pressed="true"') == 1
    (pressed,) = [button for button in main_part.split("<button") if 'aria-pressed="true"' in button]
    assert 'data-label="red"' in pressed  # the view opens on the first content word, not on "a"
    assert "word's log-probability relative to the other words" in main_part


def test_classes_are_listed_by_score_and_say_what_the_score_is():
    from mmcam.report.pictures import record_pictures
    from mmcam.report.views import target_view

    targets = [
        {"label": name, "index": i, "score": score, "score_kind": "logit"}
        for i, (name, score) in enumerate([("cat", 1.0), ("dog", 3.0), ("fox", 2.0)])
    ]
    record = {"task": "classify", "image": "x.png", "layer": "l", "method": "gradcam", "targets": targets}
    picture = Image.new("RGB", (8, 8))
    body = target_view(record, record_pictures(picture, [picture] * 3)).body
    labels = [part.split('"')[0] for part in body.split('data-label="')[1:]]
    assert labels == ["dog", "fox", "cat"] and "Scores: logit." in body


def test_rl_command_writes_one_view_per_episode(tmp_path, capsys):
    argv = ["rl", "--policy", "random:ppo", "--episodes", "2", "--max-steps", "3", "-o", str(tmp_path)]
    assert main([*argv, "--json", "--save-maps"]) == 0
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 6 and "report: open" in captured.err
    main_part = (tmp_path / "report.html").read_text().split("<main>")[1]
    assert main_part.count('data-task="rl"') == 2 and main_part.count('max="2"') == 2
    from safetensors import safe_open

    with safe_open(str(tmp_path / "episode-1-maps.safetensors"), "pt") as saved:
        assert saved.get_tensor("maps").shape[:2] == (3, 1)  # 3 steps, the chosen action
