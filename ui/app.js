// The page's entry: shows the list at `/`, or one lock at `/ui/locks/{name}`, and
// moves every countdown on the page.

import { forgetToken } from "./api.js";
import { startTicker } from "./dom.js";
import { listView } from "./list.js";
import { lockView } from "./lock.js";

const main = document.getElementById("main");
const lockPath = location.pathname.match(/^\/ui\/locks\/([^/]+)$/);
if (lockPath) {
  lockView(main, decodeURIComponent(lockPath[1]));
} else {
  listView(main);
}
startTicker();

document.getElementById("forget-token").addEventListener("click", () => {
  forgetToken();
  location.reload();
});
