// An election's page (`/ui/elections/{name}`): who leads, under which term, with
// which value, until when; kept up to date by the election's event stream.

import { followedPage } from "./page.js";
import { countdown, el, namespaceOf, lockPath, notice, timeOf } from "./dom.js";

export function electionView(main, name) {
  followedPage(main, {
    title: `${name} · election · fencelock`,
    heading: [name, " ", el("span", { class: "muted" }, "election")],
    path: `/elections/${lockPath(name)}/events`,
    render: (election) => (election.leader ? [view(election, election.leader)] : null),
    empty: () => notice("empty", "Nobody leads",
      `No candidate leads “${name}” now: none has campaigned yet, the last leader resigned, ` +
        "or its lease ran out. This page shows the next leader as soon as one is elected."),
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
