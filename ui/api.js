// The page's only way to the server: GET requests to the public JSON API, with the
// viewer's bearer token, and the operators' break-glass POSTs under /admin, sent only
// when the viewer confirms one. The token lives in this tab's sessionStorage: never
// a cookie, never the URL, gone when the tab closes.

const TOKEN_KEY = "fencelock.token";

/** How often the page asks again, in milliseconds. */
export const POLL_MS = 1000;

/** The most a request may take before the page says the server does not answer. */
const REQUEST_TIMEOUT_MS = 10000;

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(value) {
  sessionStorage.setItem(TOKEN_KEY, value);
}

export function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

/** An answer other than 2xx: `status` 0 when the server could not be reached. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// The server's clock minus this browser's, when they differ by more than the
// `Date` header's one-second precision can tell; leases end by the server's clock.
let clockOffset = 0;

/** Now, in milliseconds since the epoch, by the server's clock as best known. */
export function now() {
  return Date.now() + clockOffset;
}

function noteServerClock(response, sentAt) {
  const date = Date.parse(response.headers.get("Date") ?? "");
  if (Number.isNaN(date)) {
    return;
  }
  // The header is cut to the second: its middle is the best guess.
  const offset = date + 500 - (sentAt + Date.now()) / 2;
  clockOffset = Math.abs(offset) > 2000 ? offset : 0;
}

/** GET `path` and its JSON; throws ApiError for anything but 2xx. */
export function getJson(path, signal) {
  return requestJson("GET", path, signal);
}

/** POST `body` (JSON) to `path`, and the answer's JSON; throws ApiError for anything but 2xx. */
export function postJson(path, body) {
  return requestJson("POST", path, new AbortController().signal, body);
}

async function requestJson(method, path, signal, body) {
  const headers = { Accept: "application/json" };
  const bearer = token();
  if (bearer) {
    headers.Authorization = `Bearer ${bearer}`;
  }
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
  }
  const timeout = AbortSignal.timeout(REQUEST_TIMEOUT_MS);
  const sentAt = Date.now();
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.any([signal, timeout]),
      cache: "no-store",
      credentials: "omit",
    });
  } catch (err) {
    if (signal.aborted) {
      throw err;
    }
    const why = timeout.aborted ? `no answer within ${REQUEST_TIMEOUT_MS / 1000} s` : err.message;
    throw new ApiError(0, "unreachable", `the server could not be reached (${why})`);
  }
  noteServerClock(response, sentAt);
  const answer = await response.json().catch(() => null);
  if (!response.ok) {
    throw new ApiError(
      response.status,
      answer?.code ?? "unexpected",
      answer?.error ?? `the server answered ${response.status} ${response.statusText}`,
    );
  }
  return answer;
}

function answered() {
  document.body.dataset.refreshes = String(Number(document.body.dataset.refreshes ?? 0) + 1);
}

/**
 * Calls `load(signal)` now and every POLL_MS after each answer, handing the result to
 * `show` or the error to `fail`. `refresh()` asks again at once (dropping a request
 * in flight); `stop()` ends it. Each answer of the server (an error's too) counts in
 * `<body data-refreshes>`. While the tab is hidden it asks nothing (each answer costs
 * the server a read of DynamoDB), and asks at once when the tab is shown again.
 */
export function poll({ load, show, fail }) {
  let timer = null;
  let inflight = null;
  let stopped = false;
  let paused = false;
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && paused && !stopped) {
      paused = false;
      refresh();
    }
  });
  async function refresh() {
    clearTimeout(timer);
    if (document.hidden) {
      paused = true;
      return;
    }
    inflight?.abort();
    const request = new AbortController();
    inflight = request;
    try {
      show(await load(request.signal));
      answered();
    } catch (err) {
      if (request.signal.aborted) {
        return;
      }
      const error = err instanceof ApiError ? err : new ApiError(0, "unexpected", String(err));
      fail(error);
      if (error.status !== 0) {
        answered();
      }
    } finally {
      if (inflight === request && !stopped) {
        inflight = null;
        timer = setTimeout(refresh, POLL_MS);
      }
    }
  }
  refresh();
  return {
    refresh,
    stop() {
      stopped = true;
      clearTimeout(timer);
      inflight?.abort();
    },
  };
}

/** How long the page waits before following a stream again after it broke. */
const RECONNECT_MS = 1000;

/**
 * Follows the server-sent events at `path` (`/locks/{name}/events`, …) with the
 * viewer's token, which `EventSource` cannot send: a `fetch` whose body is read as
 * `text/event-stream`. Each event goes to `show(event, data, id)` and counts in
 * `<body data-refreshes>`; an answer other than 200 goes to `fail` (a 4xx other than
 * 429 stops the stream until `refresh()`), and a stream that breaks goes to `fail` as
 * unreachable and is followed again after a second, from the last event seen
 * (`Last-Event-ID`), so nothing the server still keeps is missed. Nothing is polled:
 * the server sends what changes.
 */
export function follow({ path, show, fail }) {
  let last = null;
  let current = null;
  let stopped = false;
  let timer = null;
  async function open() {
    clearTimeout(timer);
    current?.abort();
    const request = new AbortController();
    current = request;
    const headers = { Accept: "text/event-stream" };
    const bearer = token();
    if (bearer) headers.Authorization = `Bearer ${bearer}`;
    if (last !== null) headers["Last-Event-ID"] = String(last);
    let retry = true;
    try {
      const sentAt = Date.now();
      const response = await fetch(path, {
        headers, signal: request.signal, cache: "no-store", credentials: "omit",
      });
      noteServerClock(response, sentAt);
      if (!response.ok) {
        const body = await response.json().catch(() => null);
        // A refusal (a token needed, a filter that is not valid) is not asked again
        // until `refresh()`; an unavailable server is.
        retry = response.status >= 500 || response.status === 429;
        fail(new ApiError(response.status, body?.code ?? "unexpected",
          body?.error ?? `the server answered ${response.status} ${response.statusText}`));
        answered();
        return;
      }
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value.replaceAll("\r\n", "\n");
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const event = parseEvent(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
          if (event) {
            last = event.id ?? last;
            show(event.event, event.data, event.id);
            answered();
          }
        }
      }
      fail(new ApiError(0, "unreachable", "the server ended the stream (is it restarting?)"));
    } catch (err) {
      if (request.signal.aborted) return;
      fail(new ApiError(0, "unreachable", `the stream broke (${err.message})`));
    } finally {
      if (current === request && !stopped && retry) {
        timer = setTimeout(open, RECONNECT_MS);
      }
    }
  }
  open();
  return {
    refresh: open,
    stop() {
      stopped = true;
      clearTimeout(timer);
      current?.abort();
    },
  };
}

/** One `text/event-stream` block: `{event, id, data}`, or null for a comment. */
function parseEvent(block) {
  let event = null;
  let id = null;
  const data = [];
  for (const line of block.split("\n")) {
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "event") event = value;
    else if (field === "id") id = /^\d+$/.test(value) ? Number(value) : null;
    else if (field === "data") data.push(value);
  }
  if (event === null) return null;
  let parsed;
  try {
    parsed = JSON.parse(data.join("\n"));
  } catch {
    parsed = {};
  }
  return { event, id, data: parsed };
}
