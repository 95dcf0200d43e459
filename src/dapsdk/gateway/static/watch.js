// The watch page: low-latency fMP4 over WebSocket into MSE, or HLS (hls.js, else native HLS).
// Measures startup, stalls, rendition switches, dropped frames and latency behind the publisher
// and reports them to /api/v1/qoe every 2 s. window.avrsPlayer exposes the state to tests.
"use strict";
(function () {
  const contentId = decodeURIComponent(location.pathname.split("/").pop());
  const params = new URLSearchParams(location.search);
  const video = document.getElementById("video");
  const badge = document.getElementById("badge");
  const errorsEl = document.getElementById("errors");
  const modeSelect = document.getElementById("mode");
  const tokenInput = document.getElementById("token");
  const playerId = "web-" + Math.random().toString(36).slice(2, 12);
  tokenInput.value = params.get("token") || sessionStorage.getItem("avrsToken") || "";
  tokenInput.onchange = () => sessionStorage.setItem("avrsToken", tokenInput.value);
  modeSelect.value = params.get("mode") || "auto";
  modeSelect.onchange = () => { params.set("mode", modeSelect.value); location.search = params.toString(); };

  const state = window.avrsPlayer = {
    content: contentId, mode: null, rendition: "", latencyMs: null, bufferS: 0,
    startupMs: null, stalls: 0, stallMs: 0, switches: 0, errors: [], fragments: 0,
    chat: [], started: performance.now(),
  };
  function fail(msg) { state.errors.push(String(msg)); errorsEl.textContent = state.errors.slice(-3).join(" | "); }
  function authHeaders() {
    const t = tokenInput.value.trim();
    return t ? { "Authorization": "Bearer " + t } : {};
  }
  // players cannot set headers on media requests: the token goes in the URL (the gateway's
  // playlists then carry it into every URI they list)
  function tokenParam(sep) {
    const t = tokenInput.value.trim();
    return t ? sep + "token=" + encodeURIComponent(t) : "";
  }

  // ------------------------------------------------------------------ QoE bookkeeping
  let stallStart = null;
  video.addEventListener("playing", () => {
    if (state.startupMs === null) state.startupMs = Math.round(performance.now() - state.started);
    if (stallStart !== null) { state.stallMs += performance.now() - stallStart; stallStart = null; }
  });
  video.addEventListener("waiting", () => {
    if (state.startupMs !== null && stallStart === null) { state.stalls += 1; stallStart = performance.now(); }
  });
  video.addEventListener("error", () => fail("media error " + (video.error && video.error.code)));
  function bufferAhead() {
    const b = video.buffered;
    for (let i = 0; i < b.length; i++) {
      if (b.start(i) <= video.currentTime + 0.05 && video.currentTime <= b.end(i)) return b.end(i) - video.currentTime;
    }
    return 0;
  }
  function updateBadge() {
    state.bufferS = bufferAhead();
    const lat = state.latencyMs === null ? "–" : Math.round(state.latencyMs) + " ms";
    badge.textContent = `${state.mode || "…"} · ${state.rendition || "?"} · buffer ${state.bufferS.toFixed(2)} s · latency ${lat}`;
  }
  setInterval(updateBadge, 250);
  setInterval(() => {
    if (state.startupMs === null) return;
    const q = video.getVideoPlaybackQuality ? video.getVideoPlaybackQuality() : { droppedVideoFrames: 0 };
    const report = {
      content: contentId, player: playerId, kind: state.mode === "low-latency" ? "low-latency" : "hls",
      startup_ms: state.startupMs, stalls: state.stalls, stall_ms: Math.round(state.stallMs),
      rendition: state.rendition.slice(0, 64), switches: state.switches,
      dropped_frames: q.droppedVideoFrames || 0, buffer_s: state.bufferS,
    };
    if (state.latencyMs !== null) report.latency_ms = Math.max(0, state.latencyMs);
    fetch("/api/v1/qoe", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(report) })
      .catch(() => {});
  }, 2000);

  // ------------------------------------------------------------------ low-latency mode (MSE)
  function playLowLatency(info) {
    state.mode = "low-latency";
    const renditions = info.renditions.slice().sort((a, b) => a.bandwidth - b.bandwidth);
    const rendition = renditions[0];
    state.rendition = rendition.name;
    const ms = new MediaSource();
    video.src = URL.createObjectURL(ms);
    const frags = [];  // [{start, published_at}] of appended fragments, bounded
    let sb = null; const queue = []; let startedPlay = false;
    function pump() {
      if (!sb || sb.updating || queue.length === 0) return;
      try { sb.appendBuffer(queue.shift()); } catch (e) { fail("append: " + e); }
    }
    ms.addEventListener("sourceopen", () => {
      const proto = location.protocol === "https:" ? "wss:" : "ws:";
      const ws = new WebSocket(`${proto}//${location.host}/live/${encodeURIComponent(contentId)}/${encodeURIComponent(rendition.name)}${tokenParam("?")}`);
      ws.binaryType = "arraybuffer";
      ws.onmessage = (ev) => {
        const view = new DataView(ev.data);
        const hlen = view.getUint32(0);
        const header = JSON.parse(new TextDecoder().decode(new Uint8Array(ev.data, 4, hlen)));
        const body = new Uint8Array(ev.data, 4 + hlen);
        if (header.init) {
          const mime = `video/mp4; codecs="${header.codecs}"`;
          if (!MediaSource.isTypeSupported(mime)) { fail("unsupported " + mime); ws.close(); return; }
          sb = ms.addSourceBuffer(mime);
          sb.mode = "segments";
          sb.addEventListener("updateend", () => {
            if (!startedPlay && video.buffered.length) {
              startedPlay = true;
              video.currentTime = video.buffered.start(0);
              video.play().catch((e) => fail("play: " + e));
            }
            // trim what is far behind, to bound the SourceBuffer
            if (!sb.updating && video.currentTime > 30 && video.buffered.length && video.buffered.start(0) < video.currentTime - 20) {
              try { sb.remove(0, video.currentTime - 10); return; } catch (e) { /* next time */ }
            }
            pump();
          });
        } else {
          frags.push({ start: header.start, published_at: header.published_at });
          if (frags.length > 600) frags.splice(0, frags.length - 600);
          state.fragments += 1;
        }
        queue.push(body);
        if (queue.length > 300) queue.splice(0, queue.length - 300);
        pump();
      };
      ws.onerror = () => fail("websocket error");
      ws.onclose = () => { if (state.fragments === 0) fail("websocket closed"); };
    });
    // latency: now minus the publication time of the frame on screen
    setInterval(() => {
      if (!frags.length || video.readyState < 2) return;
      const t = video.currentTime;
      let f = null;
      for (let i = frags.length - 1; i >= 0; i--) { if (frags[i].start <= t + 1e-3) { f = frags[i]; break; } }
      if (f === null) return;
      state.latencyMs = Date.now() - (f.published_at + (t - f.start)) * 1000;
      // stay at the live edge: skip ahead when more than 0.3 s is buffered
      const ahead = bufferAhead();
      if (ahead > 0.3) video.currentTime = video.currentTime + ahead - 0.1;
    }, 200);
  }

  // ------------------------------------------------------------------ HLS (hls.js or native)
  function playHls(info) {
    const src = `/hls/${encodeURIComponent(contentId)}/master.m3u8?viewer=${playerId}${tokenParam("&")}`;
    if (window.Hls && window.Hls.isSupported()) {
      state.mode = "hls.js";
      const hls = new window.Hls({ lowLatencyMode: info.type !== "vod", backBufferLength: 30 });
      let lastLevel = null;
      hls.on(window.Hls.Events.LEVEL_SWITCHED, (_e, data) => {
        const level = hls.levels[data.level];
        const name = level ? `${level.height}p` : String(data.level);
        if (lastLevel !== null && lastLevel !== name) state.switches += 1;
        lastLevel = name; state.rendition = name;
      });
      hls.on(window.Hls.Events.ERROR, (_e, data) => { if (data.fatal) fail("hls.js " + data.type + " " + data.details); else state.errors.push("hls.js non-fatal " + data.details); });
      hls.loadSource(src);
      hls.attachMedia(video);
      setInterval(() => {
        if (info.type === "vod") { state.latencyMs = null; return; }
        const date = hls.playingDate;
        if (date) state.latencyMs = Date.now() - date.getTime();
      }, 200);
      state.hls = hls;
    } else if (video.canPlayType("application/vnd.apple.mpegurl")) {
      state.mode = "native-hls";
      state.rendition = "auto";
      video.src = src;
    } else {
      fail("this browser plays neither HLS nor MSE");
      return;
    }
    video.play().catch(() => {});
  }

  async function start() {
    let info;
    try {
      const r = await fetch(`/api/v1/contents/${encodeURIComponent(contentId)}`);
      info = await r.json();
      if (!r.ok) { fail(info.detail || "no such content"); return; }
    } catch (e) { fail("content lookup: " + e); return; }
    document.getElementById("title").textContent = `${info.title || contentId} (${info.type})`;
    const want = modeSelect.value;
    const mseOk = "MediaSource" in window;
    if (info.type !== "vod" && (want === "ll" || (want === "auto" && mseOk)) && mseOk) playLowLatency(info);
    else playHls(info);
  }

  // ------------------------------------------------------------------ chat and poll
  const chatLog = document.getElementById("chat-log");
  async function refreshChat() {
    const r = await fetch(`/api/v1/contents/${encodeURIComponent(contentId)}/chat`, { headers: authHeaders() });
    const body = await r.json().catch(() => ({}));
    if (!r.ok) { document.getElementById("chat-note").textContent = body.detail || ("chat: " + r.status); return; }
    document.getElementById("chat-note").textContent = "";
    state.chat = body.messages || [];
    chatLog.innerHTML = "";
    for (const m of state.chat) {
      const div = document.createElement("div");
      div.textContent = `${m.author || "?"}: ${m.text}`;
      chatLog.appendChild(div);
    }
    chatLog.scrollTop = chatLog.scrollHeight;
  }
  document.getElementById("chat-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const input = document.getElementById("chat-text");
    const text = input.value.trim();
    if (!text) return;
    const r = await fetch(`/api/v1/contents/${encodeURIComponent(contentId)}/chat`, {
      method: "POST", headers: Object.assign({ "Content-Type": "application/json" }, authHeaders()),
      body: JSON.stringify({ text }),
    });
    const body = await r.json().catch(() => ({}));
    if (!r.ok) { document.getElementById("chat-note").textContent = body.detail || ("chat: " + r.status); return; }
    input.value = "";
    refreshChat();
  });
  async function refreshPoll() {
    const r = await fetch(`/api/v1/contents/${encodeURIComponent(contentId)}/polls`, { headers: authHeaders() });
    const body = await r.json().catch(() => ({}));
    const el = document.getElementById("poll");
    if (!r.ok) { document.getElementById("poll-note").textContent = body.detail || ("polls: " + r.status); return; }
    el.innerHTML = "";
    for (const poll of body.polls || []) {
      const q = document.createElement("div"); q.textContent = poll.question; el.appendChild(q);
      poll.options.forEach((opt, i) => {
        const b = document.createElement("button");
        b.textContent = `${opt.text} (${opt.votes})`;
        b.onclick = () => fetch(`/api/v1/contents/${encodeURIComponent(contentId)}/polls/${poll.id}/votes`, {
          method: "POST", headers: Object.assign({ "Content-Type": "application/json" }, authHeaders()),
          body: JSON.stringify({ option: i }) }).then(refreshPoll);
        el.appendChild(b);
      });
    }
  }
  setInterval(() => { refreshChat().catch(() => {}); refreshPoll().catch(() => {}); }, 1500);
  refreshChat().catch(() => {}); refreshPoll().catch(() => {});
  start();
})();
