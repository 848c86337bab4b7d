// One lock's page (`/ui/locks/{name}`): everything the lock's view says, the whole
// body included, kept up to date by the lock's event stream (nothing is polled).

import { followedPage } from "./page.js";
import { countdown, el, lockPath, namespaceOf, notice, stateBadge, stateOf, timeOf } from "./dom.js";

export function lockView(main, name) {
  followedPage(main, {
    title: `${name} · fencelock`,
    heading: [name],
    path: `/locks/${lockPath(name)}/events`,
    render: (lock) => (lock.fence === undefined ? null : view(lock)),
    empty: () => notice("empty", "This lock has no record",
      `Nobody has taken “${name}” yet, or its record was reclaimed after its release. ` +
        "This page shows it as soon as someone takes it."),
  });
}

function view(lock) {
  const item = (term, ...value) => [el("dt", {}, term), el("dd", {}, ...value)];
  const none = el("span", { class: "muted" }, "—");
  return [
    el("dl", { class: "details", "data-lock": lock.name, "data-state": stateOf(lock.expireTime) },
      item("State", stateBadge(lock.expireTime)),
      item("Namespace", namespaceOf(lock.name)),
      item("Fence", el("code", {}, String(lock.fence))),
      item("Owner", lock.owner ?? none),
      item("Acquired", timeOf(lock.acquireTime)),
      item("Last heartbeat", timeOf(lock.heartbeatTime)),
      item("Lease ends", countdown(lock.expireTime),
        lock.expireTime ? [" ", timeOf(lock.expireTime)] : null),
      item("Lease length", lock.ttl),
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
