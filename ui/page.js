// What the pages of one lock, semaphore or election share: a heading, a message and
// the details, kept up to date by the thing's event stream (nothing is polled).

import { follow } from "./api.js";
import { el, notice, setStatus, showsTokenForm, tokenForm } from "./dom.js";

/**
 * Shows the page of `name` in `main` (`heading` its title) from the stream at
 * `path`: `render(data)` draws the details of each state, or answers null when there
 * is nothing to draw, and `empty()` then says why (a notice). `after`, if given, is
 * an element shown below the details that the page's redrawing leaves alone.
 */
export function followedPage(main, { title, heading, path, render, empty, after = null }) {
  document.title = title;
  const message = el("div", { class: "message" });
  const details = el("div", { class: "lock", hidden: true });
  main.replaceChildren(
    el("nav", { class: "crumbs" }, el("a", { href: "/" }, "← All locks")),
    el("h1", {}, ...heading),
    message,
    details,
    ...(after ? [after] : []),
  );
  const stream = follow({
    path,
    show(event, data) {
      // A gap is followed by the state as it is now.
      if (event === "gap") return;
      details.classList.remove("stale");
      const drawn = render(data);
      if (drawn === null) {
        details.hidden = true;
        message.replaceChildren(empty());
      } else {
        message.replaceChildren();
        details.hidden = false;
        details.dataset.event = event;
        details.replaceChildren(...drawn);
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
