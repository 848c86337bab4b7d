// An election's page (`/ui/elections/{name}`): who leads, under which term, with
// which value, until when; kept up to date by the election's event stream.

import { follow } from "./api.js";
import { countdown, el, lockPath, namespaceOf, notice, setStatus, showsTokenForm, timeOf, tokenForm } from "./dom.js";

export function electionView(main, name) {
  document.title = `${name} · election · fencelock`;
  const message = el("div", { class: "message" });
  const details = el("div", { class: "lock", hidden: true });
  main.replaceChildren(
    el("nav", { class: "crumbs" }, el("a", { href: "/" }, "← All locks")),
    el("h1", {}, name, " ", el("span", { class: "muted" }, "election")),
    message,
    details,
  );
  const stream = follow({
    path: `/elections/${lockPath(name)}/events`,
    show(event, election) {
      if (event === "gap") return;
      details.classList.remove("stale");
      const leader = election.leader ?? null;
      if (leader === null) {
        details.hidden = true;
        message.replaceChildren(notice("empty", "Nobody leads",
          `No candidate leads “${name}” now: none has campaigned yet, the last leader resigned, ` +
            "or its lease ran out. This page shows the next leader as soon as one is elected."));
      } else {
        message.replaceChildren();
        details.hidden = false;
        details.dataset.event = event;
        details.replaceChildren(view(election, leader));
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

function view(election, leader) {
  const item = (term, ...value) => [el("dt", {}, term), el("dd", {}, ...value)];
  return el("dl", { class: "details", "data-election": election.name },
    item("Leader", leader.owner ?? el("span", { class: "muted" }, "—")),
    item("Term", el("code", {}, String(leader.term))),
    item("Value", el("code", {}, leader.value)),
    item("Namespace", namespaceOf(election.name)),
    item("Leading since", timeOf(leader.since)),
    item("Last heartbeat", timeOf(leader.heartbeatTime)),
    item("Lease ends", countdown(leader.expireTime), " ", timeOf(leader.expireTime)),
    item("Lease length", leader.ttl),
    item("Version", String(election.version)));
}
