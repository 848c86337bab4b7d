// The page's entry: shows the list at `/`, one lock at `/ui/locks/{name}`, one
// semaphore at `/ui/semaphores/{name}` or one election at `/ui/elections/{name}`,
// and moves every countdown on the page.

import { forgetToken } from "./api.js";
import { startTicker } from "./dom.js";
import { listView } from "./list.js";
import { electionView } from "./election.js";
import { lockView } from "./lock.js";
import { semaphoreView } from "./semaphore.js";

const main = document.getElementById("main");
const one = location.pathname.match(/^\/ui\/(locks|semaphores|elections)\/([^/]+)$/);
const views = { locks: lockView, semaphores: semaphoreView, elections: electionView };
if (one) {
  views[one[1]](main, decodeURIComponent(one[2]));
} else {
  listView(main);
}
startTicker();

document.getElementById("forget-token").addEventListener("click", () => {
  forgetToken();
  location.reload();
});
