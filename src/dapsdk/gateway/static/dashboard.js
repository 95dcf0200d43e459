// The dashboard: polls /api/v1/summary every second; charts throughput, latency and QoE; the
// operator token (kept in sessionStorage) unlocks sessions and controls. window.avrsDashboard
// exposes the last snapshot to tests.
"use strict";
(function () {
  const tokenInput = document.getElementById("token");
  tokenInput.value = sessionStorage.getItem("avrsOperatorToken") || "";
  const dash = window.avrsDashboard = { summary: null, nodes: [], polls: 0, operator: false };
  const series = { throughput: [], latency: {} };
  let lastOut = null;

  function headers() {
    const t = tokenInput.value.trim();
    return t ? { "Authorization": "Bearer " + t } : {};
  }
  document.getElementById("login").onclick = async () => {
    sessionStorage.setItem("avrsOperatorToken", tokenInput.value.trim());
    await refreshSessions();
  };
  function fmtBytes(n) { return n > 1e6 ? (n / 1e6).toFixed(1) + " MB" : n > 1e3 ? (n / 1e3).toFixed(1) + " kB" : n + " B"; }
  function cell(tr, text) { const td = document.createElement("td"); td.textContent = text; tr.appendChild(td); return td; }

  function drawTopology(nodes) {
    const svg = document.getElementById("topology");
    const w = svg.clientWidth || 800;
    svg.innerHTML = "";
    const ns = "http://www.w3.org/2000/svg";
    const hosts = nodes.filter((n) => n.roles.includes("host"));
    const hub = hosts.length ? hosts[0] : nodes[0];
    const pos = new Map();
    nodes.forEach((n, i) => pos.set(n.address, [40 + (i + 0.5) * ((w - 80) / nodes.length), n === hub ? 40 : 120]));
    for (const n of nodes) {
      if (n === hub) continue;
      const [x1, y1] = pos.get(hub.address); const [x2, y2] = pos.get(n.address);
      const line = document.createElementNS(ns, "line");
      Object.entries({ x1, y1, x2, y2, stroke: "#3c5a80" }).forEach(([k, v]) => line.setAttribute(k, v));
      svg.appendChild(line);
    }
    for (const n of nodes) {
      const [x, y] = pos.get(n.address);
      const c = document.createElementNS(ns, "circle");
      Object.entries({ cx: x, cy: y, r: 14, fill: n.roles.includes("host") ? "#4f7cc0" : "#3f8f6a" }).forEach(([k, v]) => c.setAttribute(k, v));
      svg.appendChild(c);
      const t = document.createElementNS(ns, "text");
      t.setAttribute("x", x - 40); t.setAttribute("y", y + 30);
      t.textContent = `${n.roles.join(",")} ${n.address.slice(0, 9)}`;
      svg.appendChild(t);
    }
  }

  function chart(id, lines, colors) {
    const canvas = document.getElementById(id);
    const ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    let max = 1;
    for (const pts of lines) for (const v of pts) max = Math.max(max, v);
    lines.forEach((pts, i) => {
      ctx.strokeStyle = colors[i % colors.length]; ctx.beginPath();
      pts.forEach((v, j) => {
        const x = (j / Math.max(1, pts.length - 1)) * (canvas.width - 10) + 5;
        const y = canvas.height - 10 - (v / max) * (canvas.height - 25);
        if (j === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
      });
      ctx.stroke();
    });
    ctx.fillStyle = "#aaa"; ctx.fillText("max " + Math.round(max), 6, 12);
  }

  async function refresh() {
    const r = await fetch("/api/v1/summary");
    if (!r.ok) return;
    const s = await r.json();
    dash.summary = s; dash.nodes = s.nodes; dash.polls += 1;
    const nodesBody = document.querySelector("#nodes tbody"); nodesBody.innerHTML = "";
    for (const n of s.nodes) {
      const tr = document.createElement("tr"); tr.className = "node-row"; tr.dataset.address = n.address;
      cell(tr, n.address);
      const roles = cell(tr, ""); for (const role of n.roles) { const sp = document.createElement("span"); sp.className = "role"; sp.textContent = role; roles.appendChild(sp); }
      const L = n.load;
      cell(tr, L.connections == null ? "–" : L.connections); cell(tr, L.sessions);
      cell(tr, L.bitrate_bps == null ? "–" : (L.bitrate_bps / 1e6).toFixed(2) + " Mb/s");
      cell(tr, L.cpu_percent == null ? "–" : L.cpu_percent + " %");
      cell(tr, L.bytes_out == null ? "–" : fmtBytes(L.bytes_out)); cell(tr, n.http || "");
      nodesBody.appendChild(tr);
    }
    drawTopology(s.nodes);
    const cBody = document.querySelector("#contents tbody"); cBody.innerHTML = "";
    for (const c of s.contents) {
      const q = s.qoe[c.id] || {};
      const tr = document.createElement("tr"); tr.className = "content-row";
      cell(tr, c.id); cell(tr, c.type); cell(tr, c.state); cell(tr, c.viewers);
      cell(tr, c.renditions.map((x) => x.name).join(" "));
      cell(tr, q.latency_ms == null ? "–" : Math.round(q.latency_ms) + " ms"); cell(tr, q.stalls || 0);
      const a = document.createElement("a"); a.href = "/watch/" + encodeURIComponent(c.id); a.textContent = "watch"; cell(tr, "").appendChild(a);
      const del = document.createElement("button"); del.textContent = "end";
      del.onclick = async () => {
        const rr = await fetch("/api/v1/contents/" + encodeURIComponent(c.id), { method: "DELETE", headers: headers() });
        const body = await rr.json(); document.getElementById("control-note").textContent = rr.ok ? "ended " + c.id : body.token + ": " + body.detail;
      };
      cell(tr, "").appendChild(del);
      cBody.appendChild(tr);
      const lat = series.latency[c.id] = series.latency[c.id] || [];
      lat.push(q.latency_ms || 0); if (lat.length > 120) lat.shift();
    }
    const out = s.nodes.reduce((a, n) => a + (n.load.bytes_out || 0), 0) + s.http.bytes_out;
    if (lastOut !== null) { series.throughput.push(Math.max(0, out - lastOut)); if (series.throughput.length > 120) series.throughput.shift(); }
    lastOut = out;
    chart("chart-throughput", [series.throughput], ["#6fb1ff"]);
    chart("chart-latency", Object.values(series.latency), ["#ffb35c", "#7be08e", "#e07bd2", "#7bd8e0"]);
  }

  async function refreshHistory() {
    const s = dash.summary; if (!s || !s.contents.length) return;
    const lines = [];
    for (const c of s.contents.slice(0, 4)) {
      const r = await fetch("/api/v1/qoe/" + encodeURIComponent(c.id));
      if (!r.ok) continue;
      const h = (await r.json()).history;
      lines.push(h.map((p) => p.stalls)); lines.push(h.map((p) => p.startup_ms));
    }
    chart("chart-qoe", lines, ["#ff6f6f", "#9f9fff"]);
  }

  async function refreshSessions() {
    if (!tokenInput.value.trim()) return;
    const r = await fetch("/api/v1/sessions", { headers: headers() });
    const body = await r.json();
    const note = document.getElementById("sessions-note");
    const state = document.getElementById("login-state");
    if (!r.ok) { note.textContent = body.token + ": " + body.detail; state.textContent = "refused"; dash.operator = false; return; }
    dash.operator = true; note.textContent = ""; state.textContent = "operator";
    const tb = document.querySelector("#sessions tbody"); tb.innerHTML = "";
    for (const sess of body.sessions.slice(0, 50)) { const tr = document.createElement("tr"); cell(tr, sess.id.slice(0, 24)); cell(tr, sess.kind); cell(tr, sess.content || ""); tb.appendChild(tr); }
  }

  document.getElementById("vod-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const r = await fetch("/api/v1/vod", { method: "POST", headers: Object.assign({ "Content-Type": "application/json" }, headers()),
      body: JSON.stringify({ id: document.getElementById("vod-id").value, path: document.getElementById("vod-path").value }) });
    const body = await r.json();
    document.getElementById("control-note").textContent = r.ok ? "imported " + body.id : body.token + ": " + body.detail;
  });

  setInterval(() => refresh().catch(() => {}), 1000);
  setInterval(() => refreshSessions().catch(() => {}), 3000);
  setInterval(() => refreshHistory().catch(() => {}), 10000);
  refresh().then(refreshHistory).catch(() => {});
  refreshSessions().catch(() => {});
})();
