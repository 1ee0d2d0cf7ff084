// The live stream, read with fetch() rather than EventSource because EventSource cannot send
// an Authorization header. It reconnects by itself with backoff and resumes with
// Last-Event-ID, so a console catches up on what it missed while IO restarted.

import { unauthorized } from "./api.js";
import { state } from "./state.js";

export function setLive(on) {
  const el = document.getElementById("live");
  el.className = on ? "live on" : "live off";
  el.textContent = on ? "live" : "reconnecting…";
}

export function stopStream() {
  if (state.streamAbort) state.streamAbort.abort();
  state.streamAbort = null;
}

export async function stream(onEvent) {
  stopStream();
  const controller = new AbortController();
  state.streamAbort = controller;
  let delay = 500;
  while (!controller.signal.aborted) {
    try {
      const headers = { Accept: "text/event-stream" };
      if (state.token) headers.Authorization = `Bearer ${state.token}`;
      if (state.lastEventId) headers["Last-Event-ID"] = state.lastEventId;
      const response = await fetch("/api/v1/stream", { headers, signal: controller.signal, cache: "no-store" });
      if (response.status === 401) { unauthorized(); return; }
      if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value.replace(/\r\n/g, "\n");
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          const message = { event: "message", data: "", id: null };
          for (const line of block.split("\n")) {
            if (line.startsWith(":")) continue;
            const i = line.indexOf(":");
            const field = i < 0 ? line : line.slice(0, i);
            const val = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
            if (field === "event") message.event = val;
            else if (field === "data") message.data += (message.data ? "\n" : "") + val;
            else if (field === "id") message.id = val;
          }
          if (message.id) state.lastEventId = message.id;
          if (message.event === "hello") { setLive(true); delay = 500; }
          if (message.data) onEvent(message.event, JSON.parse(message.data));
        }
      }
    } catch (err) {
      if (controller.signal.aborted) return;
    }
    setLive(false);
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 2, 10000);
  }
}
