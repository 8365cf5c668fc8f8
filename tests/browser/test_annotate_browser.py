"""The annotation page in a real browser: Debian's headless Chromium driven by Selenium through the system
chromedriver. Logs in with a token, waits until both videos are loaded and playing in sync, votes every aspect with
the keyboard, submits with Enter, skips the next item with X, and checks what the database stored.
The Chromium fixture is in conftest.py."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from vidtune.annotate import store
from vidtune.annotate.build import create_study
from vidtune.annotate.server import serve


@pytest.fixture
def served(tmp_path):
    """A two-item study of moving-square MP4s, served on a free loopback port from a background thread."""
    from vidtune.video.io import save_video

    for side, colour in (("a", [1.0, 0.2, 0.2]), ("b", [0.2, 0.2, 1.0])):
        for k in range(2):
            v = np.zeros((8, 16, 16, 3), np.float32)
            for f in range(8):
                v[f, 4:10, f + k : f + k + 6] = colour
            save_video(v, tmp_path / side / f"{k}.mp4", fps=8, scale=8)
    (tmp_path / "p.txt").write_text("a red square moves right\na blue square moves right\n")
    res = create_study(tmp_path / "study", str(tmp_path / "a"), str(tmp_path / "b"), tmp_path / "p.txt", 1)
    srv = serve(res.study, "127.0.0.1", 0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield res, f"http://127.0.0.1:{srv.server_port}"
    srv.shutdown()
    srv.server_close()


def wait_for(driver, script: str, timeout: float = 10.0):
    """Poll a JavaScript expression until it is truthy (returns its value) or fail with the expression."""
    from selenium.common.exceptions import WebDriverException

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            value = driver.execute_script(f"return {script}")
        except WebDriverException:  # the page is being replaced (a navigation after a click)
            value = None
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for: {script}")


PLAYING = """['left', 'right'].every((s) => { const v = document.getElementById(s + '-clip');
    return v && v.readyState >= 3 && !v.paused && v.currentTime > 0 && v.videoWidth === 128; })"""


def test_login_play_vote_with_the_keyboard_and_skip(served, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    res, url = served
    t0 = time.monotonic()
    browser.get(url + "/")
    assert browser.current_url.endswith("/login")  # no token, no page
    browser.find_element(By.ID, "token").send_keys("wrong-token-0123456789")
    browser.find_element(By.ID, "login").click()
    assert "Unknown token" in wait_for(browser, "document.querySelector('.error') && "
                                                "document.querySelector('.error').textContent")
    browser.find_element(By.ID, "token").send_keys(res.annotators[0][1])
    browser.find_element(By.ID, "login").click()
    wait_for(browser, "document.getElementById('main') && document.getElementById('main').dataset.state === 'ready'",
             timeout=15)
    first = int(browser.find_element(By.ID, "main").get_attribute("data-assignment"))
    assert browser.find_element(By.ID, "progress").text == "0 / 2"
    wait_for(browser, PLAYING)
    drift = browser.execute_script("return Math.abs(document.getElementById('left-clip').currentTime - "
                                   "document.getElementById('right-clip').currentTime)")
    assert drift < 0.25  # started together and kept in sync

    body = browser.find_element(By.TAG_NAME, "body")
    typed = ["1", "2", "3", Keys.ARROW_LEFT, Keys.ARROW_RIGHT]  # one key per aspect, in display order
    for key in typed:
        body.send_keys(key)
    assert browser.find_element(By.ID, "submit").is_enabled()
    body.send_keys(Keys.ENTER)
    wait_for(browser, f"document.getElementById('main').dataset.assignment !== '{first}' && "
                      "document.getElementById('main').dataset.state === 'ready'")
    assert browser.find_element(By.ID, "progress").text == "1 / 2"
    wait_for(browser, PLAYING)
    second = int(browser.find_element(By.ID, "main").get_attribute("data-assignment"))
    body.send_keys("x")  # skip
    wait_for(browser, "document.getElementById('main').dataset.state === 'finished'")
    assert browser.find_element(By.ID, "progress").text == "2 / 2"

    conn = store.open_study(res.study)
    a = store.get_assignment(conn, 1, first)
    stored = dict(conn.execute("SELECT aspect, choice FROM votes WHERE assignment_id = ?", (first,)).fetchall())
    assert stored == dict(zip(store.ASPECTS, ["left", "same", "right", "left", "right"]))
    outcomes = dict(conn.execute("SELECT aspect, outcome FROM votes WHERE assignment_id = ?", (first,)).fetchall())
    assert outcomes == {asp: store.outcome(c, a.a_side) for asp, c in stored.items()}
    assert a.status == "done" and store.get_assignment(conn, 1, second).status == "skipped"
    assert conn.execute("SELECT COUNT(*) FROM votes").fetchone()[0] == len(store.ASPECTS)

    # the admin page shows the live table: one judgment per aspect, G/S/B as stored
    browser.delete_all_cookies()
    browser.get(url + "/login")
    browser.find_element(By.ID, "token").send_keys(res.admin_token)
    browser.find_element(By.ID, "login").click()
    row = "document.querySelectorAll('#gsb tr[data-aspect=overall] td')"
    cells = wait_for(browser, f"{row}.length && [...{row}].map(c => c.textContent)")
    expected = {"G": 0, "S": 0, "B": 0, outcomes["overall"]: 1}
    assert cells[:5] == ["overall", str(expected["G"]), str(expected["S"]), str(expected["B"]), "1"]
    assert time.monotonic() - t0 < 30
