/* Sluice monitor: a websocket that reconnects with backoff and catches up by seq.
   SluiceLive.connect(path, {sinceFn, onEvent, onState}) — sinceFn() returns the last seq the
   page has (run sockets); onEvent gets each history event once (deduped by run id + seq). */
(function () {
  "use strict";
  function connect(path, opts) {
    const seen = new Set();
    let delay = 500, socket = null, closed = false;
    function url() {
      const base = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + path;
      if (!opts.sinceFn) return base;
      return base + (base.includes("?") ? "&" : "?") + "since=" + opts.sinceFn();
    }
    function open() {
      opts.onState && opts.onState("connecting");
      socket = new WebSocket(url());
      socket.onopen = () => { delay = 500; opts.onState && opts.onState("live"); };
      socket.onmessage = (message) => {
        const data = JSON.parse(message.data);
        if (data.type === "history") {
          const key = data.event.run_id + ":" + data.event.seq;
          if (seen.has(key)) return;
          seen.add(key);
          if (seen.size > 50000) seen.clear();
          opts.onEvent(data.event);
        } else if (data.type === "caught_up") {
          opts.onCaughtUp && opts.onCaughtUp(data.seq);
        } else if (data.type === "error") {
          console.warn("monitor socket:", data.error);
        }
      };
      socket.onclose = (event) => {
        if (closed) return;
        if (event.code === 4401 || event.code === 4403 || event.code === 4404) {
          opts.onState && opts.onState("refused");
          return;
        }
        opts.onState && opts.onState("reconnecting");
        setTimeout(open, delay);
        delay = Math.min(delay * 2, 10000);
        opts.onReconnect && opts.onReconnect();
      };
    }
    open();
    return { close() { closed = true; socket && socket.close(); } };
  }
  function indicator(el) {
    const labels = { connecting: "connecting…", live: "live", reconnecting: "reconnecting…", refused: "not allowed" };
    return (state) => { if (!el) return; el.dataset.state = state; el.textContent = labels[state] || state; };
  }
  window.SluiceLive = { connect, indicator };
})();
