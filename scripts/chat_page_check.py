#!/usr/bin/env python3
"""Drives `gpt serve`'s chat page in headless Chromium (Selenium): sets a system prompt and sampling settings,
sends a message, and checks that the assistant's reply arrives in several streamed pieces, that the status line
shows tokens/s, and that a second turn works. Optionally saves a screenshot.

usage: scripts/chat_page_check.py --base-url http://127.0.0.1:PORT [--api-key KEY] [--screenshot FILE]
needs: Debian's chromium and chromium-driver; pip install selenium
"""
import argparse, sys, time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

# Records the length of the last assistant bubble's text at every change, to tell a streamed reply from one that
# appears at once.
OBSERVE = """
window.lengths = [];
new MutationObserver(() => {
  const replies = document.querySelectorAll('.message.assistant .content');
  if (replies.length) window.lengths.push(replies[replies.length - 1].textContent.length);
}).observe(document.getElementById('log'), {subtree: true, childList: true, characterData: true});
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--api-key")
    parser.add_argument("--screenshot")
    parser.add_argument("--chromedriver", default="/usr/bin/chromedriver")
    args = parser.parse_args()
    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1100,800"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(args.chromedriver), options=options)
    try:
        driver.get(args.base_url + "/")
        wait = WebDriverWait(driver, 60)
        if args.api_key:
            key = driver.find_element(By.ID, "key")
            key.send_keys(args.api_key)
            driver.execute_script("arguments[0].dispatchEvent(new Event('change'))", key)
        wait.until(lambda d: "context" in d.find_element(By.ID, "model").text)
        print("model line:", driver.find_element(By.ID, "model").text)
        driver.find_element(By.ID, "system").send_keys("You are a helpful assistant.")
        for field, value in (("temperature", "0.7"), ("max_tokens", "48"), ("seed", "3")):
            element = driver.find_element(By.ID, field)
            element.clear()
            element.send_keys(value)
        driver.execute_script(OBSERVE)
        box = driver.find_element(By.ID, "input")
        box.send_keys("Hello! Who are you?")
        box.send_keys(Keys.ENTER)
        wait.until(lambda d: "tokens/s" in d.find_element(By.ID, "status").text)
        replies = driver.find_elements(By.CSS_SELECTOR, ".message.assistant .content")
        reply = replies[-1].text
        lengths = driver.execute_script("return window.lengths")
        growth = sorted({n for n in lengths if n > 0})
        print(f"reply: {reply[:80]!r}… ({len(reply)} characters)")
        print(f"status: {driver.find_element(By.ID, 'status').text}")
        print(f"the reply grew through {len(growth)} lengths: {growth[:12]}")
        failures = []
        if not reply:
            failures.append("no reply text")
        if len(growth) < 3:
            failures.append("the reply did not arrive in streamed pieces")
        if driver.find_elements(By.CSS_SELECTOR, ".message.error"):
            failures.append("an error bubble: " + driver.find_element(By.CSS_SELECTOR, ".message.error").text)
        # A second turn: the conversation so far goes with it.
        box.send_keys("Tell me more.")
        box.send_keys(Keys.ENTER)
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".message.assistant .content")) == 2 and
                   not d.find_element(By.ID, "send").get_attribute("disabled"))
        if not driver.find_elements(By.CSS_SELECTOR, ".message.assistant .content")[-1].text:
            failures.append("no second reply")
        if args.screenshot:
            time.sleep(0.2)
            driver.save_screenshot(args.screenshot)
            print("screenshot:", args.screenshot)
        for failure in failures:
            print("FAILED:", failure)
        print("OK" if not failures else "FAILED")
        return 1 if failures else 0
    finally:
        driver.quit()


if __name__ == "__main__":
    sys.exit(main())
