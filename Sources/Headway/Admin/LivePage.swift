/// `GET /` on the admin port: one self-contained page (no CDN: sidecars have no internet) that polls
/// `/live.json` every second. Polling rather than Server-Sent Events: the admin server stays a plain
/// request/response server, a page left open holds no connection the drain would wait for, and a missed
/// refresh is simply the next one.
enum LivePage {
    static let html = Array(
        #"""
        <!doctype html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <title>Headway</title>
        <style>
        body { font: 13px/1.4 system-ui, sans-serif; margin: 16px; color: #1b1f24; background: #fafafa; }
        h1 { font-size: 18px; margin: 0 0 4px; }
        h2 { font-size: 15px; margin: 20px 0 4px; }
        .meta { color: #57606a; margin: 2px 0; }
        table { border-collapse: collapse; width: 100%; background: #fff; }
        th, td { text-align: left; padding: 3px 8px; border-bottom: 1px solid #e5e7eb; white-space: nowrap; }
        th { background: #f0f2f4; font-weight: 600; position: sticky; top: 0; }
        td.num { text-align: right; font-variant-numeric: tabular-nums; }
        .state { display: inline-block; min-width: 70px; padding: 0 6px; border-radius: 3px; font-weight: 600; }
        .state-healthy { background: #dafbe1; color: #116329; }
        .state-unhealthy { background: #ffebe9; color: #a40e26; }
        .state-ejected { background: #fff1c2; color: #7d4e00; }
        .state-draining { background: #eaeef2; color: #424a53; }
        .state-unknown { background: #eaeef2; color: #424a53; font-style: italic; }
        .ready { font-weight: 600; }
        .ready.no { color: #a40e26; }
        .panic { color: #a40e26; font-weight: 600; }
        .events { max-height: 240px; overflow-y: auto; background: #fff; border: 1px solid #e5e7eb; padding: 4px 8px; }
        .events div { font-family: ui-monospace, monospace; font-size: 12px; }
        .scroll { max-height: 70vh; overflow-y: auto; }
        svg { vertical-align: middle; }
        #error { color: #a40e26; }
        </style>
        </head>
        <body>
        <h1>Headway <span id="version"></span></h1>
        <div class="meta">configuration generation <span id="generation">?</span>, loaded <span id="loaded"></span> ·
        <span id="ready" class="ready">?</span> · refreshed <span id="refreshed">never</span> <span id="error"></span></div>
        <div id="upstreams"></div>
        <h2>Recent events</h2>
        <div class="events" id="events"></div>
        <script>
        "use strict";
        const escape = (text) => String(text ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
        const time = (iso) => iso ? new Date(iso).toLocaleTimeString() : "–";
        const number = (value, digits) => value === null || value === undefined ? "–" : value.toFixed(digits);
        function sparkline(values) {
          if (!values.length) return "";
          const max = Math.max(1, ...values);
          const points = values.map((v, i) => `${(i * 90 / Math.max(values.length - 1, 1)).toFixed(1)},${(15 - v * 14 / max).toFixed(1)}`).join(" ");
          return `<svg width="90" height="16" role="img" aria-label="requests per second, last minute"><polyline fill="none" stroke="#0969da" stroke-width="1.2" points="${points}"/></svg>`;
        }
        function discovery(d) {
          if (d.type !== "dns") return "static endpoints";
          const parts = [`DNS ${escape(d.service)}: ${(d.addresses || []).length} addresses`];
          if (d.ttl !== null && d.ttl !== undefined) parts.push(`TTL ${d.ttl}s`);
          parts.push(`resolved ${time(d.resolved_at)}`, `next ${time(d.next_resolution_at)}`);
          if (d.last_error) parts.push(`last error: ${escape(d.last_error)} (${d.consecutive_failures} in a row)`);
          return parts.join(" · ");
        }
        function render(doc) {
          document.getElementById("version").textContent = doc.version;
          document.getElementById("generation").textContent = doc.generation;
          document.getElementById("loaded").textContent = time(doc.loaded_at);
          const ready = document.getElementById("ready");
          ready.textContent = doc.ready ? "ready" : `not ready: ${doc.ready_reason}`;
          ready.className = doc.ready ? "ready" : "ready no";
          document.getElementById("upstreams").innerHTML = doc.upstreams.map((u) => `
            <section data-upstream="${escape(u.name)}">
            <h2>upstream ${escape(u.name)}</h2>
            <div class="meta">policy ${escape(u.policy)} · ${discovery(u.discovery)}</div>
            <div class="meta">health checks ${escape(u.health_checks)} · ${u.healthy_endpoints} of ${u.endpoints.length} healthy
            ${u.panic_mode ? '· <span class="panic">PANIC MODE: requests go to every endpoint not ejected</span>' : "· no panic"} · retry budget ${escape(u.retry_budget)}</div>
            <div class="scroll"><table>
            <thead><tr><th>endpoint</th><th>state</th><th>weight</th><th>connections (idle/busy)</th><th>in flight</th>
            <th>req/s</th><th>last minute</th><th>errors</th><th>p50 ms</th><th>p99 ms</th><th>ejected until</th></tr></thead>
            <tbody>${u.endpoints.map((e) => `
              <tr data-endpoint="${escape(e.address)}" data-state="${escape(e.state)}">
              <td>${escape(e.address)}</td>
              <td><span class="state state-${escape(e.state)}">${escape(e.state)}</span></td>
              <td class="num">${e.weight}${e.slow_start_percent !== null && e.slow_start_percent !== undefined ? ` (slow start ${e.slow_start_percent}%)` : ""}</td>
              <td class="num">${e.idle_connections}/${e.connections - e.idle_connections}</td>
              <td class="num">${e.in_flight}</td>
              <td class="num">${number(e.requests_per_second, 1)}</td>
              <td>${sparkline(e.sparkline)}</td>
              <td class="num">${e.error_rate === null || e.error_rate === undefined ? "–" : (e.error_rate * 100).toFixed(1) + "%"}</td>
              <td class="num">${number(e.p50_ms, 2)}</td>
              <td class="num">${number(e.p99_ms, 2)}</td>
              <td>${e.ejected_until ? time(e.ejected_until) : ""}</td>
              </tr>`).join("")}</tbody></table></div></section>`).join("");
          document.getElementById("events").innerHTML = doc.events.length ? doc.events.map((e) =>
            `<div>${time(e.time)} ${escape(e.upstream)} ${escape(e.endpoint || "")} ${escape(e.message)}</div>`).join("") : "<div>nothing yet</div>";
          document.getElementById("refreshed").textContent = new Date().toLocaleTimeString();
        }
        async function refresh() {
          try {
            const response = await fetch("/live.json", { cache: "no-store" });
            render(await response.json());
            document.getElementById("error").textContent = "";
          } catch (error) {
            document.getElementById("error").textContent = `(refresh failed: ${error})`;
          }
          setTimeout(refresh, 1000);
        }
        refresh();
        </script>
        </body>
        </html>

        """#.utf8
    )
}
