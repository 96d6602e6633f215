/* The monitor's live client: a websocket that reconnects with backoff and catches up by seq.
 *
 * connect(path, {sinceFn, onEvent, onCaughtUp, onState, onReconnect}): sinceFn() returns the
 * last seq the page has (run sockets ask the server for everything after it); onEvent gets each
 * history event once (deduplicated by run id and seq). Used by the run page, the run list, the
 * dashboard and the designer's test runs.
 *
 * Frames: run sockets send {"type": "history", "event"} per event; the feed (/ws/monitor/)
 * sends {"type": "history_batch", "events": [...]} per tick (in order); both reach onEvent one
 * event at a time. A socket closed for falling behind (4408) reconnects like any other drop.
 */

const REFUSED = new Set([4401, 4403, 4404]);
const LABELS = { connecting: "connecting…", live: "live", reconnecting: "reconnecting…", refused: "not allowed" };

export function connect(path, opts) {
  const seen = new Set();
  const state = (value) => opts.onState && opts.onState(value);
  let delay = 500;
  let socket = null;
  let closed = false;
  function url() {
    const base = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + path;
    if (!opts.sinceFn) return base;
    return base + (base.includes("?") ? "&" : "?") + "since=" + opts.sinceFn();
  }
  function deliver(event) {
    const key = event.run_id + ":" + event.seq;
    if (seen.has(key)) return;
    seen.add(key);
    if (seen.size > 50000) seen.clear();
    opts.onEvent(event);
  }
  function open() {
    state("connecting");
    socket = new WebSocket(url());
    socket.onopen = () => { delay = 500; state("live"); };
    socket.onmessage = (message) => {
      const data = JSON.parse(message.data);
      if (data.type === "history") {
        deliver(data.event);
      } else if (data.type === "history_batch") {
        data.events.forEach(deliver);
      } else if (data.type === "caught_up") {
        if (opts.onCaughtUp) opts.onCaughtUp(data.seq);
      } else if (data.type === "error") {
        console.warn("monitor socket:", data.error);
      }
    };
    socket.onclose = (event) => {
      if (closed) return;
      if (REFUSED.has(event.code)) { state("refused"); return; }
      state("reconnecting");
      setTimeout(open, delay);
      delay = Math.min(delay * 2, 10000);
      if (opts.onReconnect) opts.onReconnect();
    };
  }
  open();
  return { close() { closed = true; if (socket) socket.close(); } };
}

/** An onState callback that shows the connection's state in `el` (a .live-indicator). */
export function indicator(el) {
  return (state) => {
    if (!el) return;
    el.dataset.state = state;
    el.textContent = LABELS[state] || state;
  };
}
