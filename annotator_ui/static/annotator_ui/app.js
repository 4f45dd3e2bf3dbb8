/* Annotator UI behaviour: keyboard shortcuts, lease countdown with renewal, time taken,
   focus after swaps, and a banner when a request fails. Loaded as a static file (the CSP
   allows no inline script). The page works without it: every action is a form post. */
(function () {
  "use strict";

  // The answer keys are not listed here: each answer button carries its key in
  // aria-keyshortcuts, rendered from ml_worker.core.choice.Choice.key (docs/choice.md).
  // After a new comparison swaps in, ignore shortcut keys this long, so a key pressed twice
  // in quick succession cannot answer a comparison nobody has looked at yet.
  var SWAP_GUARD_MS = 400;
  // Renew the lease automatically only while someone is at the page.
  var IDLE_LIMIT_MS = 15 * 60 * 1000;
  var RENEW_RETRY_MS = 10 * 1000;

  var guardUntil = 0;
  var lastActivity = Date.now();
  var shownAt = {}; // lease id -> ms when its comparison appeared
  var pendingLease = null; // lease id with an answer in flight

  function now() { return Date.now(); }

  function isTyping(el) {
    if (!el || !el.tagName) return false;
    var tag = el.tagName.toLowerCase();
    return tag === "textarea" || tag === "select" || el.isContentEditable ||
      (tag === "input" && !/^(button|submit|reset|checkbox|radio)$/i.test(el.type || ""));
  }

  function workspace() { return document.getElementById("workspace"); }

  function noteComparison() {
    var ws = workspace();
    var id = ws && ws.dataset.leaseId;
    if (id && !shownAt[id]) shownAt[id] = now();
  }

  function toggleHelp(open) {
    var help = document.getElementById("shortcuts");
    if (!help) return;
    help.open = open === undefined ? !help.open : open;
    if (help.open) help.querySelector("summary").focus();
  }

  function showError(text) {
    var banner = document.getElementById("net-error");
    if (!banner) return;
    banner.textContent = text;
    banner.hidden = false;
  }

  function clearError() {
    var banner = document.getElementById("net-error");
    if (banner) banner.hidden = true;
  }

  // --- Keyboard ------------------------------------------------------------------------
  document.addEventListener("keydown", function (ev) {
    lastActivity = now();
    if (ev.defaultPrevented || ev.ctrlKey || ev.metaKey || ev.altKey) return;
    if (isTyping(ev.target)) {
      if (ev.key === "Escape") ev.target.blur();
      return; // keys are text while the rationale (or any field) has focus
    }
    if (ev.key === "?") { ev.preventDefault(); toggleHelp(); return; }
    if (ev.key === "Escape") { toggleHelp(false); return; }
    if (ev.key === "u" || ev.key === "U") {
      var undo = document.getElementById("undo-button");
      if (undo && !undo.disabled && !ev.repeat) { ev.preventDefault(); undo.click(); }
      return;
    }
    var next = document.getElementById("next-button");
    if (next && (ev.key === "n" || ev.key === "N")) {
      ev.preventDefault();
      if (!ev.repeat && !next.disabled && now() >= guardUntil) next.click();
      return;
    }
    var form = document.getElementById("label-form");
    if (!form) return;
    var button = null;
    var answers = form.querySelectorAll('button[name="choice"]');
    for (var i = 0; i < answers.length; i++) {
      if (answers[i].getAttribute("aria-keyshortcuts") === ev.key) { button = answers[i]; break; }
    }
    if (!button && (ev.key === "s" || ev.key === "S")) {
      button = document.getElementById("skip-button");
    }
    if (!button) return;
    ev.preventDefault();
    if (ev.repeat || now() < guardUntil || button.disabled) return;
    var lease = workspace() && workspace().dataset.leaseId;
    if (lease && pendingLease === lease) return; // this comparison is answered already
    pendingLease = lease;
    button.click(); // the same path as a mouse click: htmx, or a plain form post without it
  });

  // A double click whose second click lands after the next comparison swapped in would
  // answer that one unseen: clicks on the answer buttons are ignored during the guard, and
  // so is the second click of a double click.
  document.addEventListener("click", function (ev) {
    var button = ev.target && ev.target.closest && ev.target.closest("#label-form button, #skip-form button");
    if (!button) return;
    if (ev.detail > 1 || now() < guardUntil) {
      ev.preventDefault();
      ev.stopPropagation();
    }
  }, true);

  // --- Time taken ------------------------------------------------------------------------
  // Capture phase: runs before htmx reads the form, and for plain posts too.
  document.addEventListener("submit", function (ev) {
    var form = ev.target;
    if (!form || form.id !== "label-form") return;
    var field = form.querySelector('input[name="time_taken_ms"]');
    var ws = workspace();
    var started = ws && shownAt[ws.dataset.leaseId];
    if (field && started) field.value = String(Math.max(0, Math.round(now() - started)));
  }, true);

  ["pointerdown", "input", "wheel", "touchstart"].forEach(function (type) {
    document.addEventListener(type, function () { lastActivity = now(); }, { passive: true, capture: true });
  });
  document.addEventListener("scroll", function () { lastActivity = now(); }, { passive: true, capture: true });

  // --- Lease countdown and renewal ----------------------------------------------------------
  function fmt(seconds) {
    var m = Math.floor(seconds / 60), s = seconds % 60;
    return m + ":" + (s < 10 ? "0" : "") + s;
  }

  function tick() {
    var el = document.querySelector(".lease-timer[data-seconds-left]");
    if (!el) return;
    // The server sends seconds left, not a clock time: a skewed client clock does not matter.
    if (!el._deadline) el._deadline = now() + Number(el.dataset.secondsLeft) * 1000;
    var left = Math.max(0, Math.round((el._deadline - now()) / 1000));
    var value = el.querySelector(".timer-value");
    if (value) value.textContent = fmt(left);
    el.classList.toggle("is-low", left <= 60);
    var total = Number(el.dataset.leaseSeconds) || 300;
    var threshold = Math.min(60, Math.floor(total / 3));
    var form = el.querySelector(".renew-form");
    if (left > 0 && left <= threshold && form && window.htmx &&
        now() - lastActivity < IDLE_LIMIT_MS && !(el._renewAfter > now())) {
      el._renewAfter = now() + RENEW_RETRY_MS;
      form.requestSubmit(); // htmx posts it and swaps in the new timer
    }
    if (left === 0 && !el._expired) {
      el._expired = true;
      el.classList.add("is-expired");
      if (value) value.textContent = "0:00 (time is up: reload the page for a comparison)";
    }
  }
  setInterval(tick, 1000);

  // --- htmx integration ---------------------------------------------------------------------
  document.addEventListener("htmx:afterSwap", function (ev) {
    clearError();
    tick(); // start a swapped-in countdown from the moment it appears
    var target = ev.detail && ev.detail.target;
    if (!target || target.id !== "workspace") return;
    pendingLease = null;
    var ws = workspace();
    noteComparison();
    guardUntil = now() + SWAP_GUARD_MS;
    // Move focus to the new comparison (the button pressed is gone) and show it from the top,
    // unless this was a background poll and the user is elsewhere.
    var heading = document.getElementById("workspace-title");
    var polled = ev.detail.requestConfig && ev.detail.requestConfig.verb === "get";
    if (heading && !(polled && ws && ws.dataset.state !== "labeling")) {
      ws.scrollIntoView({ block: "start" });
      heading.focus({ preventScroll: true });
    }
  });

  document.addEventListener("htmx:afterRequest", function (ev) {
    if (ev.detail && ev.detail.failed) pendingLease = null;
  });

  document.addEventListener("htmx:responseError", function (ev) {
    var xhr = ev.detail && ev.detail.xhr;
    var status = xhr ? xhr.status : "?";
    var verb = ev.detail.requestConfig && ev.detail.requestConfig.verb;
    if (status === 503) {
      showError("The service is briefly unavailable." +
        (verb === "post" ? " Your last action may not have been saved; try again in a few seconds (it will not be counted twice)." : " Reload the page in a few seconds."));
      return;
    }
    showError("The server answered with an error (" + status + ")." +
      (verb === "post" ? " Your last action was not saved; try again, or reload the page." : " Reload the page."));
  });

  document.addEventListener("htmx:sendError", function (ev) {
    var verb = ev.detail.requestConfig && ev.detail.requestConfig.verb;
    showError("The server could not be reached." +
      (verb === "post" ? " Your last action was not saved; try again (it will not be counted twice)." : ""));
  });

  function init() { noteComparison(); tick(); }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
