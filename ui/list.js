// The list of locks (`/`): filters kept in the URL's query, a page of locks at a
// time through the cursors of `GET /locks`, followed by `GET /events/locks` (the page
// as a snapshot, then each change of a lock on it): nothing is polled.

import { follow } from "./api.js";
import {
  countdown, el, lockPath, namespaceOf, notice, setStatus, showsTokenForm, stateBadge, stateOf, timeOf, tokenForm,
} from "./dom.js";

/** Locks on one page of the table. */
export const PAGE_SIZE = 100;
/** How much of a body the list shows; the lock's own page shows all of it. */
const BODY_PREVIEW = 80;

const COLUMNS = [
  "Name", "Namespace", "State", "Owner", "Fence", "Acquired", "Heartbeat", "Expires",
  "Lease", "Waiting", "Body",
];

export function listView(main) {
  const query = new URLSearchParams(location.search);
  const filters = {
    prefix: query.get("prefix") ?? "",
    namespace: query.get("namespace") ?? "",
    held: query.get("held") === "1",
  };
  // The cursor each page starts at: pages[0] is the first page.
  let pages = [null];
  let next = null;
  let shown = false;

  const prefix = el("input", { type: "search", name: "prefix", value: filters.prefix,
    placeholder: "e.g. billing:", "aria-label": "name prefix", spellcheck: "false" });
  const namespace = el("input", { type: "search", name: "namespace", value: filters.namespace,
    placeholder: "any", "aria-label": "namespace", spellcheck: "false" });
  const held = el("input", { type: "checkbox", name: "held", checked: filters.held });
  const message = el("div", { class: "message" });
  const body = el("tbody");
  const table = el("table", { class: "locks", hidden: true },
    el("thead", {}, el("tr", {}, COLUMNS.map((c) => el("th", { scope: "col" }, c)))), body);
  const previous = el("button", { type: "button", name: "previous", disabled: true }, "← Previous");
  const following = el("button", { type: "button", name: "next", disabled: true }, "Next →");
  const where = el("span", { class: "where" });
  main.replaceChildren(
    el("form", { class: "filters", role: "search", on: { submit: (e) => e.preventDefault() } },
      el("label", {}, "Name starts with ", prefix),
      el("label", {}, "Namespace ", namespace),
      el("label", { class: "check" }, held, " Held only")),
    message,
    el("div", { class: "scroll" }, table),
    el("nav", { class: "pager", "aria-label": "pages" }, previous, where, following),
  );

  let stream = null;
  const poller = { refresh: start };
  start();

  /** Follows the page the filters and the cursor name, from its snapshot. */
  function start() {
    stream?.stop();
    stream = follow({ path: followPath(), show: changed_, fail });
  }

  function changed_(event, data) {
    if (event === "snapshot") {
      show({ locks: data.locks, next: data.nextCursor });
    } else if (data.name !== undefined && data.fence !== undefined) {
      // One lock of the page changed: its row only.
      const old = body.querySelector(`tr[data-lock="${CSS.escape(data.name)}"]`);
      old?.replaceWith(row(data));
      table.classList.remove("stale");
      message.replaceChildren();
      setStatus("live", `live · ${event} at ${new Date().toLocaleTimeString()}`);
    }
  }

  function followPath() {
    const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
    if (filters.prefix) params.set("prefix", filters.prefix);
    if (filters.namespace) params.set("namespace", filters.namespace);
    if (filters.held) params.set("held", "true");
    const cursor = pages[pages.length - 1];
    if (cursor) params.set("cursor", cursor);
    return `/events/locks?${params}`;
  }

  function show(page) {
    shown = true;
    next = page.next;
    page.locks.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    body.replaceChildren(...page.locks.map(row));
    table.hidden = page.locks.length === 0;
    table.classList.remove("stale");
    message.replaceChildren(page.locks.length === 0 ? empty() : "");
    const first = (pages.length - 1) * PAGE_SIZE;
    where.textContent = page.locks.length === 0
      ? `page ${pages.length}`
      : `page ${pages.length} · ${page.locks.length} lock${page.locks.length === 1 ? "" : "s"}`;
    previous.disabled = pages.length === 1;
    following.disabled = !next;
    where.title = `locks ${first + 1}–${first + page.locks.length} in the table's order`;
    setStatus("live", `live · updated ${new Date().toLocaleTimeString()}`);
  }

  function fail(error) {
    if (error.status === 401 || error.status === 403) {
      // What an earlier token could see is not for this one.
      body.replaceChildren();
      table.hidden = true;
      if (!showsTokenForm(message, error)) {
        message.replaceChildren(tokenForm(error, poller.refresh));
      }
      setStatus("error", error.status === 401 ? "needs a token" : "not allowed");
    } else if (error.status === 400) {
      body.replaceChildren();
      table.hidden = true;
      message.replaceChildren(notice("error", "These filters are not valid", `${error.message}.`,
        "Change them, or clear them."), clearButton());
      setStatus("error", "invalid filter");
    } else {
      // Keep what was shown, marked as old, and go on asking.
      table.classList.add("stale");
      message.replaceChildren(notice("error", "fencelock does not answer",
        `${error.message}.`,
        shown ? "What is shown is the last answer; it may be out of date. Reconnecting every second."
          : "Reconnecting every second. Is the server running?"));
      setStatus("error", "not answering · reconnecting");
    }
  }

  function empty() {
    if (filters.prefix || filters.namespace || filters.held || pages.length > 1) {
      return notice("empty", "No locks here",
        pages.length > 1 ? "This page holds no locks: go back a page."
          : "No lock matches these filters.", clearButton());
    }
    return notice("empty", "No locks yet",
      "Locks appear here as soon as they are taken, through this server or any other on the same table. Take one:",
      el("pre", {}, `curl -X POST '${location.origin}/locks/job1?nonce=abc'`));
  }

  function clearButton() {
    return el("button", { type: "button", on: { click: () => {
      prefix.value = "";
      namespace.value = "";
      held.checked = false;
      changed();
    } } }, "Clear filters");
  }

  let typing = null;
  function changed() {
    clearTimeout(typing);
    filters.prefix = prefix.value.trim();
    filters.namespace = namespace.value.trim();
    filters.held = held.checked;
    const params = new URLSearchParams();
    if (filters.prefix) params.set("prefix", filters.prefix);
    if (filters.namespace) params.set("namespace", filters.namespace);
    if (filters.held) params.set("held", "1");
    history.replaceState(null, "", params.size ? `/?${params}` : "/");
    pages = [null];
    poller.refresh();
  }
  const typed = () => {
    clearTimeout(typing);
    typing = setTimeout(changed, 250);
  };
  prefix.addEventListener("input", typed);
  namespace.addEventListener("input", typed);
  held.addEventListener("change", changed);
  following.addEventListener("click", () => {
    if (next) {
      pages.push(next);
      poller.refresh();
    }
  });
  previous.addEventListener("click", () => {
    if (pages.length > 1) {
      pages.pop();
      poller.refresh();
    }
  });
}

/** One lock as a table row; on a narrow screen, as a card (see app.css). */
function row(lock) {
  // One child per cell, so that a card's grid has a label and a value per line.
  const cell = (label, ...content) => el("td", { "data-label": label }, el("div", {}, ...content));
  const body = lock.body.length > BODY_PREVIEW ? `${lock.body.slice(0, BODY_PREVIEW)}…` : lock.body;
  return el("tr", { "data-lock": lock.name, "data-state": stateOf(lock.expireTime) },
    cell("Name", el("a", { href: `/ui/locks/${lockPath(lock.name)}` }, lock.name)),
    cell("Namespace", namespaceOf(lock.name)),
    cell("State", stateBadge(lock.expireTime)),
    cell("Owner", lock.owner ?? el("span", { class: "muted" }, "—")),
    cell("Fence", el("code", {}, String(lock.fence))),
    cell("Acquired", timeOf(lock.acquireTime)),
    cell("Heartbeat", timeOf(lock.heartbeatTime)),
    cell("Expires", countdown(lock.expireTime), lock.expireTime ? [" ", timeOf(lock.expireTime)] : null),
    cell("Lease", lock.ttl),
    cell("Waiting", String(lock.waiters ?? 0)),
    cell("Body", el("span", { class: "body", title: lock.body.length > BODY_PREVIEW ? "the whole body is on the lock's page" : null }, body)),
  );
}
