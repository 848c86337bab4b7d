// One lock's page (`/ui/locks/{name}`): everything the lock's view says, the whole
// body included, kept up to date by the lock's event stream (nothing is polled).

import { follow } from "./api.js";
import {
  countdown, el, lockPath, namespaceOf, notice, setStatus, showsTokenForm, stateBadge, stateOf, timeOf, tokenForm,
} from "./dom.js";

export function lockView(main, name) {
  document.title = `${name} · fencelock`;
  const message = el("div", { class: "message" });
  const details = el("div", { class: "lock", hidden: true });
  main.replaceChildren(
    el("nav", { class: "crumbs" }, el("a", { href: "/" }, "← All locks")),
    el("h1", {}, name),
    message,
    details,
  );
  const stream = follow({
    path: `/locks/${lockPath(name)}/events`,
    show(event, lock) {
      // A gap is followed by the state as it is now.
      if (event === "gap") return;
      message.replaceChildren();
      details.classList.remove("stale");
      if (lock.fence === undefined) {
        details.hidden = true;
        message.replaceChildren(notice("empty", "This lock has no record",
          `Nobody has taken “${name}” yet, or its record was reclaimed after its release. ` +
            "This page shows it as soon as someone takes it."));
      } else {
        details.hidden = false;
        details.dataset.event = event;
        details.replaceChildren(...view(lock));
      }
      setStatus("live", `live · ${event} at ${new Date().toLocaleTimeString()}`);
    },
    fail(error) {
      if (error.status === 401 || error.status === 403) {
        details.hidden = true;
        if (!showsTokenForm(message, error)) {
          message.replaceChildren(tokenForm(error, () => stream.refresh()));
        }
        setStatus("error", error.status === 401 ? "needs a token" : "not allowed");
      } else {
        details.classList.add("stale");
        message.replaceChildren(notice("error", "fencelock does not answer", `${error.message}.`,
          "What is shown may be out of date. Reconnecting every second."));
        setStatus("error", "not answering · reconnecting");
      }
    },
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
