// A semaphore's page (`/ui/semaphores/{name}`): its limit, free slots and each
// holder with its fence and lease, kept up to date by the semaphore's event stream.

import { followedPage } from "./page.js";
import { countdown, el, lockPath, namespaceOf, notice, timeOf } from "./dom.js";

export function semaphoreView(main, name) {
  followedPage(main, {
    title: `${name} · semaphore · fencelock`,
    heading: [name, " ", el("span", { class: "muted" }, "semaphore")],
    path: `/semaphores/${lockPath(name)}/events`,
    render: (semaphore) => (semaphore.limit === undefined ? null : view(semaphore)),
    empty: () => notice("empty", "This semaphore has no record",
      `Nobody has taken a slot of “${name}” yet. This page shows it as soon as someone does.`),
  });
}

function view(semaphore) {
  const item = (term, ...value) => [el("dt", {}, term), el("dd", {}, ...value)];
  const none = () => el("span", { class: "muted" }, "—");
  const rows = semaphore.holders.map((slot) => el("tr", { "data-fence": String(slot.fence) },
    el("td", { "data-label": "Fence" }, el("code", {}, String(slot.fence))),
    el("td", { "data-label": "Owner" }, slot.owner ?? none()),
    el("td", { "data-label": "Acquired" }, timeOf(slot.acquireTime)),
    el("td", { "data-label": "Heartbeat" }, timeOf(slot.heartbeatTime)),
    el("td", { "data-label": "Expires" }, countdown(slot.expireTime)),
    el("td", { "data-label": "Lease" }, slot.ttl)));
  return [
    el("dl", { class: "details", "data-semaphore": semaphore.name },
      item("Limit", String(semaphore.limit)),
      item("Held", String(semaphore.holders.length)),
      item("Free", String(semaphore.free)),
      item("Namespace", namespaceOf(semaphore.name)),
      item("Last fence", el("code", {}, String(semaphore.fence))),
      item("Acquires waiting on this server", String(semaphore.waiters ?? 0))),
    el("h2", {}, "Holders"),
    rows.length === 0
      ? el("p", { class: "muted" }, "no slot is held")
      : el("div", { class: "scroll" }, el("table", { class: "locks holders" },
        el("thead", {}, el("tr", {}, ["Fence", "Owner", "Acquired", "Heartbeat", "Expires", "Lease"]
          .map((c) => el("th", { scope: "col" }, c)))),
        el("tbody", {}, ...rows))),
  ];
}
