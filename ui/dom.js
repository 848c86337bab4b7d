// Building the page. Every value from the server goes into the page as text (a text
// node or an attribute), never as markup, so a lock body of `<img onerror=…>` is
// shown as those characters and runs nothing.

import { now, setToken, token } from "./api.js";

/**
 * An element: `attrs` are attributes (`on` an object of event handlers), `children`
 * strings (as text), elements, arrays of them, or null (skipped).
 */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "on") {
      for (const [event, handler] of Object.entries(value)) {
        node.addEventListener(event, handler);
      }
    } else if (value === true) {
      node.setAttribute(name, "");
    } else if (value !== false && value !== null && value !== undefined) {
      node.setAttribute(name, String(value));
    }
  }
  node.append(...children.flat().filter((child) => child !== null && child !== undefined));
  return node;
}

/** A lock name as a URL path segment; `:` stays readable (names need no other escape). */
export function lockPath(name) {
  return encodeURIComponent(name).replaceAll("%3A", ":");
}

/** The namespace of a lock name: the part before its first `:`, or "default". */
export function namespaceOf(name) {
  const colon = name.indexOf(":");
  return colon < 0 ? "default" : name.slice(0, colon);
}

/** `held` (a live lease), `expired` (it ran out, never released) or `free` (released). */
export function stateOf(expireTime, at = now()) {
  if (expireTime === null) {
    return "free";
  }
  return Date.parse(expireTime) > at ? "held" : "expired";
}

/** A time in the viewer's zone (the date only when not today), UTC on hover. */
export function timeOf(iso) {
  if (!iso) {
    return el("span", { class: "muted" }, "—");
  }
  const at = new Date(iso);
  const today = at.toDateString() === new Date().toDateString();
  const local = at.toLocaleString(undefined, today
    ? { timeStyle: "medium" }
    : { dateStyle: "short", timeStyle: "medium" });
  return el("time", { datetime: iso, title: `${iso} (UTC)` }, local);
}

/** "in 29.4 s", "in 4 m 05 s", "3 s ago" (it expired), "released". */
export function countdownText(expireTime, at = now()) {
  if (expireTime === null) {
    return "released";
  }
  const left = Date.parse(expireTime) - at;
  return left > 0 ? `in ${span(left, true)}` : `${span(-left, false)} ago`;
}

function span(ms, tenths) {
  const seconds = ms / 1000;
  if (seconds < 60) {
    return tenths ? `${seconds.toFixed(1)} s` : `${Math.floor(seconds)} s`;
  }
  const whole = Math.floor(seconds);
  const [h, m, s] = [Math.floor(whole / 3600), Math.floor(whole / 60) % 60, whole % 60];
  const two = (n) => String(n).padStart(2, "0");
  return h > 0 ? `${h} h ${two(m)} m` : `${m} m ${two(s)} s`;
}

/** A badge saying the lock's state, kept right by the ticker as the lease runs out. */
export function stateBadge(expireTime) {
  const state = stateOf(expireTime);
  return el(
    "span",
    { class: `state ${state}`, "data-tick": "state", "data-expires": expireTime },
    state,
  );
}

/** The time left of a lease, moving with the ticker. */
export function countdown(expireTime) {
  return el(
    "span",
    { class: "countdown", "data-tick": "countdown", "data-expires": expireTime },
    countdownText(expireTime),
  );
}

/** How long a holding has lasted: "4 m 05 s". */
export function heldFor(acquireTime) {
  return el("span", { "data-tick": "held-for", "data-since": acquireTime },
    span(Math.max(0, now() - Date.parse(acquireTime)), false));
}

/**
 * Whether the holder renews in time: it should heartbeat every third of its lease,
 * so a lease with less than a third left is renewed late. The lease's length is the
 * last renewal's (`expireTime - heartbeatTime`).
 */
function renewalOf(heartbeatTime, expireTime, at) {
  const [beat, end] = [Date.parse(heartbeatTime), Date.parse(expireTime)];
  const left = end - at;
  if (left <= 0) {
    return ["ran-out", `the lease ran out ${span(-left, false)} ago without a renewal`];
  }
  const since = span(Math.max(0, at - beat), false);
  return left * 3 >= end - beat
    ? ["on-time", `in time: last renewed ${since} ago`]
    : ["late", `late: not renewed for ${since}, ${span(left, true)} of the lease left`];
}

/** Whether the holder renews in time, moving with the ticker. */
export function renewal(heartbeatTime, expireTime) {
  const [state, text] = renewalOf(heartbeatTime, expireTime, now());
  return el("span", {
    class: `renewal ${state}`, "data-tick": "renewal", "data-renewal": state,
    "data-heartbeat": heartbeatTime, "data-expires": expireTime,
  }, text);
}

/**
 * Moves every countdown, state badge, hold time and renewal on the page ten times a
 * second, so a lease shows as expired the moment it ends, between two answers of the
 * server.
 */
export function startTicker() {
  setInterval(() => {
    const at = now();
    for (const node of document.querySelectorAll("[data-tick]")) {
      if (node.dataset.tick === "held-for") {
        node.textContent = span(Math.max(0, at - Date.parse(node.dataset.since)), false);
        continue;
      }
      const expireTime = node.getAttribute("data-expires");
      if (expireTime === null) {
        continue;
      }
      if (node.dataset.tick === "countdown") {
        node.textContent = countdownText(expireTime, at);
      } else if (node.dataset.tick === "renewal") {
        const [state, text] = renewalOf(node.dataset.heartbeat, expireTime, at);
        node.textContent = text;
        node.className = `renewal ${state}`;
        node.dataset.renewal = state;
      } else {
        const state = stateOf(expireTime, at);
        if (node.textContent !== state) {
          node.textContent = state;
          node.className = `state ${state}`;
          node.closest("[data-lock]")?.setAttribute("data-state", state);
        }
      }
    }
  }, 100);
}

/** The header's line saying whether the page is live. */
export function setStatus(kind, text) {
  const status = document.getElementById("status");
  status.className = `status ${kind}`;
  status.textContent = text;
  document.getElementById("forget-token").hidden = !token();
}

/** A box saying what is wrong (or empty) and what to do, with optional actions. */
export function notice(kind, title, ...lines) {
  return el("div", { class: `notice ${kind}`, role: kind === "error" ? "alert" : null },
    el("strong", {}, title),
    lines.map((line) => (typeof line === "string" ? el("p", {}, line) : line)));
}

/**
 * The form that asks for a bearer token: the answer goes to this tab's
 * sessionStorage, and `done()` asks the server again with it.
 */
/**
 * What a token form answers: the refusal, and whether a token was sent (never the
 * token itself, which stays out of the page).
 */
function tokenQuestion(error) {
  return `${error.status} ${token() ? "token" : "none"}`;
}

/**
 * Whether `container` already shows the token form for `error`. The page asks the
 * server again every second; redrawing the form at each answer would empty what is
 * being typed, so a form that asks the same question is left as it is.
 */
export function showsTokenForm(container, error) {
  return container.querySelector("form.token")?.dataset.question === tokenQuestion(error);
}

export function tokenForm(error, done) {
  const input = el("input", {
    type: "password",
    name: "token",
    autocomplete: "off",
    required: true,
    placeholder: "bearer token",
    "aria-label": "bearer token",
  });
  const submit = (event) => {
    event.preventDefault();
    const value = input.value.trim();
    if (value) {
      setToken(value);
      done();
    }
  };
  const title = error.status === 401
    ? (token() ? "The server does not accept this token" : "This server asks for a token")
    : "This token may not see this";
  return notice("error", title,
    `The server said: ${error.message}.`,
    "Enter a token from the server's token file (one that may list locks, for the list). " +
      "It is kept in this browser tab only, and sent to this server only.",
    el("form", { class: "token", "data-question": tokenQuestion(error), on: { submit } },
      input, el("button", { type: "submit" }, "Use token")));
}
