"""The labeling page in a real browser: Debian's Chromium, headless, driven by Playwright for
Python against pytest-django's live server. Never `playwright install`: the system
Chromium is used (scripts/ensure_chromium.sh installs it; `make test` calls that).

Screenshots of the labeling page (wide and narrow) are written to var/screenshots/, which
git ignores; copies of them live under docs/img/ for the README.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from django.db import OperationalError
from django.utils import timezone

from annotator_ui import views
from rlhf_platform.campaigns.services import comparisons_import_pairs
from rlhf_platform.labeling.models import Choice, Label, Lease, LeaseState
from tests.conftest import make_campaign

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

SCREENSHOTS = Path(__file__).resolve().parents[2] / "var" / "screenshots"
WIDE = {"width": 1400, "height": 1000}
NARROW = {"width": 390, "height": 844}


class Page:
    """A logged-in page plus what it saw: dialogs, CSP reports, requests."""

    def __init__(self, page, base_url: str):
        self.page = page
        self.base = base_url
        self.dialogs: list[str] = []
        self.csp_errors: list[str] = []
        self.requests: list[str] = []
        page.on("dialog", self._on_dialog)
        page.on("console", self._on_console)
        page.on("request", lambda r: self.requests.append(r.url))
        # Generous: the suite shares a small machine with other test runs.
        page.set_default_timeout(20_000)
        page.set_default_navigation_timeout(30_000)

    def _on_dialog(self, dialog) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def _on_console(self, message) -> None:
        if "Content Security Policy" in message.text:
            self.csp_errors.append(message.text)

    def login(self, username: str) -> None:
        self.page.goto(self.base + "/login/")
        self.page.get_by_label("Username").fill(username)
        self.page.get_by_label("Password").fill("pw-" + username)
        self.page.get_by_role("button", name="Log in").click()
        self.page.wait_for_url(self.base + "/")

    def open_campaign(self, campaign) -> None:
        """Open the labeling page and, when a pair is waiting, press "Next pair" (the page's
        GET leases nothing; the button's POST does)."""
        self.page.goto(f"{self.base}/campaigns/{campaign.pk}/label/")
        self.ready()
        if self.state() == "ready":
            self.next_pair()

    def next_pair(self) -> None:
        self.page.get_by_role("button", name="Next pair").click()
        self.page.wait_for_function(
            "() => document.getElementById('workspace').dataset.state !== 'ready'"
        )
        self.page.wait_for_timeout(500)  # past the guard against double presses

    def ready(self) -> None:
        self.page.wait_for_function("() => window.htmx !== undefined")

    def lease_id(self) -> str | None:
        return self.page.get_attribute("#workspace", "data-lease-id")

    def state(self) -> str:
        return self.page.get_attribute("#workspace", "data-state")

    def shown(self) -> tuple[str, str]:
        return (
            self.page.inner_text("#response-a").strip(),
            self.page.inner_text("#response-b").strip(),
        )

    def wait_for_new_workspace(self, old_lease: str | None) -> None:
        """Until htmx has swapped in another comparison (or another state), then past the
        short guard during which the page ignores shortcut keys."""
        self.page.wait_for_function(
            """(old) => { const ws = document.getElementById('workspace');
                 return ws && (ws.dataset.leaseId || null) !== old; }""",
            arg=old_lease,
        )
        self.page.wait_for_timeout(500)


@pytest.fixture
def open_page(browser, live_server):
    contexts = []

    def make(username: str = "anna", **context_args) -> Page:
        context = browser.new_context(**({"viewport": WIDE} | context_args))
        contexts.append(context)
        page = Page(context.new_page(), live_server.url)
        page.login(username)
        return page

    yield make
    for context in contexts:
        context.close()


def labels_of(user) -> list[Label]:
    return list(Label.objects.filter(annotator=user).select_related("comparison__response_a"))


def preferred_text(label: Label) -> str:
    c = label.comparison
    return (c.response_a if label.choice == Choice.A else c.response_b).text


# --- Labeling with the keyboard --------------------------------------------------------------


def test_label_five_comparisons_with_the_keyboard(open_page, annotator, campaign):
    ui = open_page()
    ui.page.get_by_role("link", name="Start labeling").click()
    ui.ready()
    assert ui.state() == "ready" and not Lease.objects.exists()  # the GET leased nothing
    ui.next_pair()
    ui.page.evaluate("() => { window.__marker = 'kept'; }")
    keys = ["1", "2", "3", "0", "1"]
    seen = []
    for key in keys:
        lease = ui.lease_id()
        left, right = ui.shown()
        seen.append((int(lease), key, left, right))
        ui.page.keyboard.press(key)
        ui.wait_for_new_workspace(lease)
        # The next comparison came without a page load: the window survives.
        assert ui.page.evaluate("() => window.__marker") == "kept"
        assert "Saved:" in ui.page.inner_text(".flashes")
    assert ui.state() == "empty"  # the campaign had five pairs
    assert "The next round is being prepared" in ui.page.inner_text("#workspace")
    assert "5" in ui.page.inner_text('[data-stat="total"]')

    by_lease = {label.lease_id: label for label in labels_of(annotator)}
    assert len(by_lease) == 5
    for lease_id, key, left, right in seen:
        label = by_lease[lease_id]
        if key == "1":
            assert preferred_text(label) == left  # "A" is the response shown on the left
        elif key == "2":
            assert preferred_text(label) == right
        else:
            assert label.choice == {"3": Choice.TIE, "0": Choice.BOTH_BAD}[key]
        assert label.time_taken_ms is not None and label.time_taken_ms > 0
    assert not ui.dialogs and not ui.csp_errors


def test_s_skips_and_question_mark_shows_the_shortcuts(open_page, annotator, campaign):
    ui = open_page()
    ui.open_campaign(campaign)
    assert not ui.page.locator("#shortcuts").evaluate("d => d.open")
    ui.page.keyboard.press("?")
    assert ui.page.locator("#shortcuts").evaluate("d => d.open")
    assert ui.page.get_by_text("Show or hide this list").is_visible()
    ui.page.keyboard.press("Escape")
    assert not ui.page.locator("#shortcuts").evaluate("d => d.open")

    lease = ui.lease_id()
    ui.page.keyboard.press("s")
    ui.wait_for_new_workspace(lease)
    assert Lease.objects.get(pk=lease).state == LeaseState.SKIPPED
    assert "Skipped." in ui.page.inner_text(".flashes")
    assert not Label.objects.exists()


def test_keys_do_nothing_while_the_rationale_has_focus(open_page, annotator, campaign):
    ui = open_page()
    ui.open_campaign(campaign)
    lease = ui.lease_id()
    box = ui.page.get_by_label("Rationale")
    box.click()
    ui.page.keyboard.type("1 beats 2, s0 ?")
    ui.page.wait_for_timeout(700)
    assert box.input_value() == "1 beats 2, s0 ?"
    assert ui.lease_id() == lease and not Label.objects.exists()
    assert Lease.objects.get(pk=lease).state == LeaseState.ACTIVE
    assert not ui.page.locator("#shortcuts").evaluate("d => d.open")
    ui.page.keyboard.press("Escape")  # leaves the field; keys work again
    ui.page.keyboard.press("2")
    ui.wait_for_new_workspace(lease)
    label = Label.objects.get()
    assert label.rationale == "1 beats 2, s0 ?" and label.lease_id == int(lease)


def test_a_double_click_or_a_repeated_key_stores_one_label(open_page, annotator, campaign):
    ui = open_page()
    ui.open_campaign(campaign)
    lease = ui.lease_id()
    ui.page.get_by_role("button", name="A is better").dblclick()
    ui.wait_for_new_workspace(lease)
    ui.page.wait_for_timeout(500)
    assert Label.objects.filter(annotator=annotator).count() == 1

    lease = ui.lease_id()
    ui.page.keyboard.press("2")
    ui.page.keyboard.press("2")
    ui.page.keyboard.press("2")
    ui.wait_for_new_workspace(lease)
    ui.page.wait_for_timeout(500)
    assert Label.objects.filter(annotator=annotator).count() == 2
    assert Label.objects.filter(lease_id=lease).count() == 1

    # A slow double click: the second click comes after the answer went out, perhaps after
    # the next comparison appeared under the pointer. It must not answer that one.
    lease = ui.lease_id()
    button = ui.page.get_by_role("button", name="Tie")
    button.click()
    ui.page.wait_for_timeout(150)
    button.click(force=True)
    ui.wait_for_new_workspace(lease)
    ui.page.wait_for_timeout(500)
    assert Label.objects.filter(annotator=annotator).count() == 3
    assert Label.objects.filter(lease_id=lease).count() == 1
    assert Lease.objects.filter(annotator=annotator, state=LeaseState.ACTIVE).count() == 1


def test_a_database_outage_on_submit_says_so_and_the_retry_stores_one_label(
    open_page, annotator, campaign, monkeypatch
):
    """The submit hits a database outage (a 503 from the real page handler): the page says the
    service is briefly unavailable and keeps the comparison; pressing the key again once the
    database is back stores exactly one label for that lease."""
    ui = open_page()
    ui.open_campaign(campaign)
    lease = ui.lease_id()
    real = views.label_submit

    def down(**kwargs):
        raise OperationalError("the database system is shutting down")

    monkeypatch.setattr(views, "label_submit", down)
    ui.page.keyboard.press("1")
    ui.page.wait_for_selector("#net-error:not([hidden])")
    assert "briefly unavailable" in ui.page.inner_text("#net-error")
    assert ui.lease_id() == lease  # the same comparison stays on screen
    assert Label.objects.filter(lease_id=lease).count() == 0

    monkeypatch.setattr(views, "label_submit", real)
    ui.page.wait_for_timeout(500)
    ui.page.keyboard.press("1")
    ui.wait_for_new_workspace(lease)
    assert Label.objects.filter(lease_id=lease).count() == 1
    assert not ui.csp_errors


# --- Untrusted content ---------------------------------------------------------------------------

PAYLOAD = "\n\n".join(
    [
        "<script>window.__pwned = 'script'; alert('script')</script>",
        "<img src=x onerror=\"window.__pwned = 'img'; alert('img')\">",
        "[click me](javascript:window.__pwned='link') and <a href=\"javascript:alert('a')\">raw</a>",
        # CSP-bypass attempts: a script from our own origin (allowed by script-src 'self'),
        # htmx attributes that would fetch or eval, an SVG handler, a meta refresh.
        '<script src="/static/annotator_ui/vendor/htmx.min.js"></script>',
        '<div hx-get="/?pwned=htmx" hx-trigger="load" hx-target="body">htmx load</div>',
        "<button hx-on:click=\"window.__pwned='hx-on'\">press</button>",
        "<svg onload=\"window.__pwned='svg'\"></svg>",
        '<meta http-equiv="refresh" content="0;url=/?pwned=meta">',
        "<iframe srcdoc=\"<script>parent.__pwned='iframe'</script>\"></iframe>",
    ]
)


def test_hostile_responses_render_as_text_and_run_nothing(open_page, annotator, researcher):
    campaign = make_campaign(researcher, name="hostile", pairs=0, members=(annotator,))
    comparisons_import_pairs(
        campaign=campaign,
        pairs=[
            {
                "prompt": "<b onmouseover=alert(1)>Be nice</b>",
                "response_a": PAYLOAD,
                "response_b": PAYLOAD + " (B)",
            }
        ],
    )
    ui = open_page()
    ui.open_campaign(campaign)
    ui.page.wait_for_timeout(1500)  # give any payload time to fire
    assert ui.page.evaluate("() => window.__pwned") is None
    assert not ui.dialogs
    text = ui.page.inner_text("#response-a")
    assert "<script>window.__pwned = 'script'; alert('script')</script>" in text
    assert "<img src=x onerror=" in text and "javascript:" in text
    for selector in (
        "script",
        "img",
        "svg",
        "iframe",
        "meta",
        "[hx-get]",
        "[hx-on\\:click]",
        "a[href^=javascript]",
    ):
        assert ui.page.locator(f".response-body {selector}").count() == 0, selector
    handlers = ui.page.evaluate(
        """() => [...document.querySelectorAll('.md *')].flatMap(
             el => [...el.attributes].map(a => a.name)
                   .filter(n => n.startsWith('on') || n.startsWith('hx-') || n === 'style'))"""
    )
    assert handlers == []
    # Clicking the text of the would-be links does nothing either.
    ui.page.get_by_text("click me").first.click()
    ui.page.wait_for_timeout(300)
    assert ui.page.evaluate("() => window.__pwned") is None
    assert not any("pwned" in url for url in ui.requests)
    assert not ui.csp_errors  # the page itself needs nothing the CSP forbids

    # The second wall: were markup ever to slip through, the CSP blocks inline handlers.
    ui.page.evaluate(
        """() => { const d = document.createElement('div');
                   d.innerHTML = '<img src="x" onerror="window.__pwned=\\'csp\\'">';
                   document.getElementById('response-a').appendChild(d); }"""
    )
    ui.page.wait_for_timeout(500)
    assert ui.page.evaluate("() => window.__pwned") is None
    assert ui.csp_errors, "Chromium reports the blocked inline handler"


# --- Leases, reloads, polling ----------------------------------------------------------------------


def test_reload_mid_lease_keeps_the_same_comparison(open_page, annotator, campaign):
    ui = open_page()
    ui.open_campaign(campaign)
    lease, shown = ui.lease_id(), ui.shown()
    ui.page.reload()
    ui.ready()
    assert ui.lease_id() == lease and ui.shown() == shown
    assert Lease.objects.filter(annotator=annotator).count() == 1


def test_the_countdown_runs_and_the_lease_is_renewed(open_page, annotator, campaign, settings):
    settings.LEASE_SECONDS = 12  # renewal starts when a third (4 s) is left
    ui = open_page()
    ui.open_campaign(campaign)
    lease = Lease.objects.get(pk=ui.lease_id())
    first = ui.page.inner_text(".timer-value")
    ui.page.wait_for_timeout(1500)
    assert ui.page.inner_text(".timer-value") != first  # it counts down
    ui.page.mouse.move(200, 200)  # someone is at the page
    for _ in range(60):  # up to 15 s
        renewed = Lease.objects.get(pk=lease.pk)
        if renewed.expires_at > lease.expires_at:
            break
        ui.page.wait_for_timeout(250)
    assert renewed.expires_at > lease.expires_at, "the page renewed its lease"
    assert renewed.state == LeaseState.ACTIVE
    ui.page.wait_for_timeout(1000)
    # The countdown shows the new time, and the page still holds the same comparison.
    assert int(ui.page.get_attribute(".lease-timer", "data-seconds-left")) >= 9
    assert ui.lease_id() == str(lease.pk)
    ui.page.wait_for_timeout(
        max(0.0, (lease.expires_at - timezone.now()).total_seconds()) * 1000 + 500
    )
    assert Lease.objects.get(pk=lease.pk).expires_at > timezone.now()  # past the first expiry


def test_the_empty_queue_turns_into_a_comparison(open_page, annotator, researcher, monkeypatch):
    monkeypatch.setattr(views, "POLL_SECONDS", 1)
    campaign = make_campaign(researcher, name="later", pairs=0, members=(annotator,))
    ui = open_page()
    ui.open_campaign(campaign)
    assert ui.state() == "empty"
    assert "The next round is being prepared" in ui.page.inner_text("#workspace")
    ui.page.evaluate("() => { window.__marker = 'kept'; }")
    comparisons_import_pairs(
        campaign=campaign,
        pairs=[{"prompt": "Fresh prompt", "response_a": "left or right", "response_b": "other"}],
    )
    # The poll (a GET) shows the "Next pair" button and leases nothing; "n" leases.
    ui.page.wait_for_function(
        "() => document.getElementById('workspace').dataset.state === 'ready'"
    )
    assert not Lease.objects.exists()
    ui.page.wait_for_timeout(500)  # htmx has processed the swapped-in form; past the guard
    ui.page.keyboard.press("n")
    ui.page.wait_for_function(
        "() => document.getElementById('workspace').dataset.state === 'labeling'"
    )
    assert "Fresh prompt" in ui.page.inner_text(".prompt")
    assert ui.page.evaluate("() => window.__marker") == "kept"


def test_the_spent_budget_state(open_page, annotator, researcher):
    campaign = make_campaign(researcher, name="tiny", members=(annotator,), label_cap=1)
    ui = open_page()
    ui.open_campaign(campaign)
    lease = ui.lease_id()
    ui.page.keyboard.press("1")
    ui.wait_for_new_workspace(lease)
    assert ui.state() == "budget"
    assert "The label budget is spent" in ui.page.inner_text("#workspace")
    assert "Saved: A is better." in ui.page.inner_text(".flashes")
    assert ui.page.locator("#label-form").count() == 0


# --- Layout, zoom, screenshots -----------------------------------------------------------------

SHOWCASE_PROMPT = (
    "Write a Python function that returns the **n-th Fibonacci number**, and explain its "
    "running time in one sentence."
)
SHOWCASE_A = """Here is an iterative version:

```python
def fib(n: int) -> int:
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a
```

It runs in **O(n)** time and O(1) memory, because each step only keeps the last two values.
"""
SHOWCASE_B = """You can use recursion:

```python
def fib(n):
    if n < 2:
        return n
    return fib(n - 1) + fib(n - 2)
```

- Short and close to the mathematical definition.
- Takes *exponential* time, since the same values are computed again and again.

See [the Wikipedia article](https://en.wikipedia.org/wiki/Fibonacci_sequence) for more.
"""


@pytest.fixture
def showcase(researcher, annotator):
    campaign = make_campaign(
        researcher, name="Helpful coding answers", pairs=0, members=(annotator,), label_cap=2000
    )
    campaign.guidelines = "Prefer answers that are **correct**, then clear, then short."
    campaign.save()
    comparisons_import_pairs(
        campaign=campaign,
        pairs=[{"prompt": SHOWCASE_PROMPT, "response_a": SHOWCASE_A, "response_b": SHOWCASE_B}],
    )
    return campaign


def _box(ui: Page, selector: str) -> dict:
    return ui.page.locator(selector).bounding_box()


def test_wide_screens_show_the_pair_side_by_side_and_narrow_ones_stack_it(open_page, showcase):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    wide = open_page()
    wide.open_campaign(showcase)
    a, b = _box(wide, "#response-a"), _box(wide, "#response-b")
    assert abs(a["y"] - b["y"]) < 2 and b["x"] >= a["x"] + a["width"]
    wide.page.screenshot(path=str(SCREENSHOTS / "labeling.png"), full_page=True)

    narrow = open_page(viewport=NARROW, is_mobile=True, has_touch=True)
    narrow.open_campaign(showcase)
    a, b = _box(narrow, "#response-a"), _box(narrow, "#response-b")
    assert b["y"] >= a["y"] + a["height"] and abs(a["x"] - b["x"]) < 2
    assert narrow.page.evaluate(
        "() => document.documentElement.scrollWidth <= document.documentElement.clientWidth"
    )
    narrow.page.screenshot(path=str(SCREENSHOTS / "labeling-narrow.png"), full_page=True)


def test_usable_at_200_percent_zoom(open_page, annotator, showcase):
    # 200% zoom of a 1280 x 800 window: half as many CSS pixels, each drawn twice as large.
    ui = open_page(viewport={"width": 640, "height": 400}, device_scale_factor=2)
    ui.open_campaign(showcase)
    assert ui.page.evaluate(
        "() => document.documentElement.scrollWidth <= document.documentElement.clientWidth"
    )
    a, b = _box(ui, "#response-a"), _box(ui, "#response-b")
    assert b["y"] >= a["y"] + a["height"]  # stacked
    for name in ("A is better", "B is better", "Tie", "Both bad", "Skip"):
        button = ui.page.get_by_role("button", name=name)
        button.scroll_into_view_if_needed()
        assert button.is_visible() and button.is_enabled()
        box = button.bounding_box()
        assert box["width"] >= 44 and box["height"] >= 40 and box["x"] + box["width"] <= 640
    ui.page.screenshot(path=str(SCREENSHOTS / "labeling-zoom200.png"))
    lease = ui.lease_id()
    ui.page.get_by_role("button", name="B is better").click()
    ui.wait_for_new_workspace(lease)
    assert Label.objects.filter(annotator=annotator).count() == 1


def test_keyboard_focus_is_visible(open_page, showcase):
    ui = open_page()
    ui.open_campaign(showcase)
    button = ui.page.get_by_role("button", name="A is better")
    button.focus()
    ui.page.keyboard.press("Shift+Tab")
    ui.page.keyboard.press("Tab")  # keyboard focus, so :focus-visible applies
    outline = button.evaluate(
        "el => getComputedStyle(el).outlineStyle + ' ' + getComputedStyle(el).outlineWidth"
    )
    assert outline.startswith("solid") and not outline.endswith(" 0px")


def test_the_page_works_without_javascript(browser, live_server, annotator, campaign):
    context = browser.new_context(viewport=WIDE, java_script_enabled=False)
    try:
        ui = Page(context.new_page(), live_server.url)
        ui.login("anna")
        ui.page.goto(f"{live_server.url}/campaigns/{campaign.pk}/label/")
        with ui.page.expect_navigation():  # "Next pair": post (lease), redirect, get
            ui.page.get_by_role("button", name="Next pair").click()
        lease, (left, _) = ui.lease_id(), ui.shown()
        ui.page.get_by_label("Rationale").fill("plain form post")
        with ui.page.expect_navigation():  # a full page load: post, redirect, get
            ui.page.get_by_role("button", name="A is better").click()
        assert "Saved: A is better." in ui.page.inner_text(".flashes")
        assert ui.lease_id() != lease
        label = Label.objects.get(annotator=annotator)
        assert label.lease_id == int(lease) and preferred_text(label) == left
        assert label.rationale == "plain form post"
        with ui.page.expect_navigation():
            ui.page.get_by_role("button", name="Skip").click()
        assert "Skipped." in ui.page.inner_text(".flashes")
        with ui.page.expect_navigation():
            ui.page.get_by_role("button", name="More time").click()
        assert "more." in ui.page.inner_text(".flashes")
    finally:
        context.close()
