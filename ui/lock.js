// One lock's page (`/ui/locks/{name}`): everything the lock's view says, the whole
// body included, kept up to date by the lock's event stream (nothing is polled); and,
// for a token with the admin right, the break-glass actions, each behind a
// confirmation that says what it does.

import { getJson, postJson, token } from "./api.js";
import { followedPage } from "./page.js";
import {
  countdown, el, heldFor, lockPath, namespaceOf, notice, renewal, stateBadge, stateOf, timeOf,
} from "./dom.js";

export function lockView(main, name) {
  const actions = operatorActions(name);
  followedPage(main, {
    title: `${name} · fencelock`,
    heading: [name],
    path: `/locks/${lockPath(name)}/events`,
    render: (lock) => {
      const known = lock.fence === undefined ? null : lock;
      actions.show(known);
      return known === null ? null : view(lock);
    },
    empty: () => notice("empty", "This lock has no record",
      `Nobody has taken “${name}” yet, or its record was reclaimed after its release. ` +
        "This page shows it as soon as someone takes it."),
    after: actions.element,
  });
}

function view(lock) {
  const item = (term, ...value) => [el("dt", {}, term), el("dd", {}, ...value)];
  const none = el("span", { class: "muted" }, "—");
  const disabled = lock.disabled;
  return [
    el("dl", { class: "details", "data-lock": lock.name, "data-state": stateOf(lock.expireTime) },
      item("State", stateBadge(lock.expireTime)),
      disabled ? item("Disabled", `by ${disabled.by} `, timeOf(disabled.time),
        disabled.reason ? `: ${disabled.reason}` : "", " — no acquire succeeds until it is enabled") : null,
      lock.releaseRequestedTime
        ? item("Release requested", timeOf(lock.releaseRequestedTime),
          " — the holder is told on its next heartbeat") : null,
      lock.forceReleasedTime ? item("Force-released", timeOf(lock.forceReleasedTime)) : null,
      item("Namespace", namespaceOf(lock.name)),
      item("Fence", el("code", {}, String(lock.fence))),
      item("Owner", lock.owner ?? none),
      item("Acquired", timeOf(lock.acquireTime)),
      item("Last heartbeat", timeOf(lock.heartbeatTime)),
      item("Lease ends", countdown(lock.expireTime),
        lock.expireTime ? [" ", timeOf(lock.expireTime)] : null),
      item("Lease length", lock.ttl),
      lock.held ? item("Held for", heldFor(lock.acquireTime)) : null,
      lock.held ? item("Renewal", renewal(lock.heartbeatTime, lock.expireTime)) : null,
      item("Acquires waiting on this server", String(lock.waiters ?? 0)),
      item("Reserved for a waiting group until", lock.reservedUntil
        ? [countdown(lock.reservedUntil), " ", timeOf(lock.reservedUntil)] : none.cloneNode(true)),
      item("Metadata", lock.metadata === null
        ? none.cloneNode(true)
        : el("pre", { class: "metadata" }, JSON.stringify(lock.metadata, null, 2)))),
    el("h2", {}, "Body"),
    lock.body === ""
      ? el("p", { class: "muted" }, "empty: no unfinished work was recorded")
      : el("pre", { class: "body" }, lock.body),
  ];
}

/** Each action: its button, when it applies, and what its confirmation says. */
const ACTIONS = [
  {
    action: "ask-release",
    label: "Ask the holder to release",
    applies: (lock) => lock !== null && lock.held,
    says: (lock) => `Ask the holder of “${lock.name}” (fence ${lock.fence}) to release it? ` +
      "It is told on its next heartbeat; a careful holder finishes or stops, then releases.",
  },
  {
    action: "force-release",
    label: "Force-release",
    applies: (lock) => lock !== null && lock.expireTime !== null,
    says: (lock) => `Force-release “${lock.name}”? The holder (fence ${lock.fence}) loses it at ` +
      "once, though it may still be working: its late writes are refused only where the fence " +
      `is checked. The next holder gets a fence above ${lock.fence}; the body is kept.`,
  },
  {
    action: "disable",
    label: "Disable",
    applies: (lock) => !lock?.disabled,
    says: (lock, name) => `Disable “${name}”? No acquire succeeds until it is enabled` +
      (lock?.held ? "; the holder keeps its lease until it ends or is force-released." : "."),
  },
  {
    action: "enable",
    label: "Enable",
    applies: (lock) => Boolean(lock?.disabled),
    says: (_, name) => `Enable “${name}”? It may be acquired again at once.`,
  },
];

/**
 * The break-glass section of lock `name`'s page: hidden unless the server says the
 * viewer's token has the admin right (`GET /admin/locks/{name}`). `show(lock)` draws
 * the buttons that apply to the lock as it is now (null: no record); a confirmation
 * being answered is left as it is.
 */
function operatorActions(name) {
  const buttons = el("div", { class: "buttons" });
  const confirmation = el("div", { class: "confirmation" });
  const element = el("section", { class: "actions", hidden: true },
    el("h2", {}, "Operator actions"), buttons, confirmation);
  let lock = null;
  let allowed = false;
  function draw() {
    element.hidden = !allowed;
    buttons.replaceChildren(...ACTIONS.filter((a) => a.applies(lock)).map((a) =>
      el("button", { type: "button", "data-action": a.action, on: { click: () => ask(a) } }, a.label)));
  }
  function ask(action) {
    const reason = el("input", {
      type: "text", name: "reason", maxlength: 255, placeholder: "reason (written in the audit log)",
      "aria-label": "reason",
    });
    const confirm = async () => {
      confirmation.replaceChildren(el("p", { class: "muted" }, "Sending…"));
      try {
        const done = await postJson(`/admin/locks/${lockPath(name)}/${action.action}`,
          reason.value.trim() ? { reason: reason.value.trim() } : {});
        confirmation.replaceChildren(notice("done", done.changed
          ? `${action.label}: done`
          : `${action.label}: nothing to do, nothing changed`));
      } catch (error) {
        confirmation.replaceChildren(notice("error", `${action.label} was refused`, `${error.message}.`));
      }
    };
    confirmation.replaceChildren(el("div", { class: "notice confirm", "data-confirm": action.action },
      el("p", {}, action.says(lock, name)),
      reason,
      el("div", { class: "buttons" },
        el("button", { type: "button", class: "danger", "data-yes": action.action, on: { click: confirm } },
          `Yes, ${action.label.toLowerCase()}`),
        el("button", { type: "button", on: { click: () => confirmation.replaceChildren() } }, "Cancel"))));
  }
  // Asked once per token the tab holds (a viewer may enter one after the page opened).
  let askedWith;
  function checkRight() {
    if (allowed || askedWith === token()) return;
    askedWith = token();
    getJson(`/admin/locks/${lockPath(name)}`, new AbortController().signal)
      .then(() => {
        allowed = true;
        element.dataset.right = "granted";
        draw();
      })
      // No right (403), or no token yet: no actions are shown.
      .catch(() => {
        element.dataset.right = "refused";
      });
  }
  return {
    element,
    show(current) {
      lock = current;
      checkRight();
      draw();
    },
  };
}
