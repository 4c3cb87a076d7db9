// shoal's dashboard: the node's own HTTP API, read every two seconds, and a SQL
// console. Everything from the server is put on the page as text, never as HTML.
"use strict";

const PAGE = 50;
const REFRESH_MS = 2000;
const state = { after: "", next: null, contains: "" };
const $ = (selector) => document.querySelector(selector);

async function api(method, path, body) {
  const init = { method, credentials: "same-origin", headers: {} };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = data.error;
    const text = typeof error === "object" ? `${error.type}: ${error.message}` : error;
    throw new Error(text || `HTTP ${response.status}`);
  }
  return data;
}

function shown(value) {
  if (value === null || value === undefined) return "NULL";
  if (typeof value === "object" && "base64" in value) {
    return `<${atob(value.base64).length} bytes>`;
  }
  if (typeof value === "object" && "real" in value) return value.real;
  return String(value);
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const cell of cells) {
    const td = document.createElement("td");
    if (cell instanceof Node) td.append(cell);
    else td.textContent = cell;
    tr.append(td);
  }
  return tr;
}

function fill(table, head, rows) {
  if (head) {
    const tr = document.createElement("tr");
    for (const name of head) {
      const th = document.createElement("th");
      th.textContent = name;
      tr.append(th);
    }
    table.tHead.replaceChildren(tr);
  }
  table.tBodies[0].replaceChildren(...rows.map(row));
}

function size(bytes) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let n = bytes, unit = 0;
  while (n >= 1024 && unit < units.length - 1) { n /= 1024; unit += 1; }
  return `${unit ? n.toFixed(1) : n} ${units[unit]}`;
}

function when(seconds) {
  return seconds ? new Date(seconds * 1000).toLocaleString() : "";
}

function nameLink(name) {
  const link = document.createElement("a");
  link.href = "#console";
  link.textContent = name;
  link.addEventListener("click", () => {
    $("#database").value = name;
    document.querySelector('input[name="target"][value="one"]').checked = true;
    $("#sql").focus();
  });
  return link;
}

async function refresh() {
  try {
    const query = new URLSearchParams({ limit: PAGE });
    if (state.after) query.set("after", state.after);
    if (state.contains) query.set("contains", state.contains);
    const [status, cluster, listing] = await Promise.all([
      api("GET", "/v1/status"),
      api("GET", "/v1/cluster?databases=false"),
      api("GET", `/v1/databases?${query}`),
    ]);
    const uptime = Math.round(status.uptime_seconds);
    $("#node").textContent = `node ${cluster.node} · shoal ${status.shoal} · ` +
      `${status.ready ? "ready" : "not ready"} · up ${uptime} s · archive ${status.archive || "off"}`;
    const nodes = cluster.clustered
      ? cluster.nodes.map((n) => [n.id, n.url, n.leaving ? "leaving" : "live",
        String(n.databases), String(n.leading)])
      : [[cluster.node, status.address, status.ready ? "live" : "starting",
        String(status.databases.length) + " open", "all (one node)"]];
    fill($("#nodes"), null, nodes);

    const archived = new Map(status.databases.map((d) => [d.name, d]));
    state.next = listing.next;
    fill($("#databases"), null, listing.databases.map((d) => {
      const archive = archived.get(d.name) || {};
      const copies = (d.replicas || []).map((r) => `${r.node} v${r.version} (${r.lag})`);
      return [
        nameLink(d.name),
        String(d.version),
        d.leader || (d.durability ? "none" : "this node"),
        copies.join(", ") || "—",
        d.durability || "—",
        archive.archive_lag === undefined ? "—" : String(archive.archive_lag),
        archive.snapshot_version == null ? "—"
          : `v${archive.snapshot_version} · ${when(archive.snapshot_time)}`,
        d.size_bytes ? size(d.size_bytes) : "—",
        archive.archive_error ? `archive: ${archive.archive_error}` : "",
      ];
    }));
    const first = listing.databases.length ? listing.databases[0].name : "";
    $("#page").textContent = listing.databases.length
      ? `from ${first}${listing.next ? "" : " (last page)"}` : "no databases";
    $("#next").disabled = !listing.next;
    $("#first").disabled = !state.after;
    $("#updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
    $("#problem").hidden = true;
  } catch (error) {
    $("#problem").textContent = `cannot refresh: ${error.message}`;
    $("#problem").hidden = false;
  }
}

async function run(event) {
  event.preventDefault();
  const many = document.querySelector('input[name="target"]:checked').value === "many";
  const target = $("#database").value.trim();
  const sql = $("#sql").value;
  const status = $("#run-status");
  const errors = $("#result-errors");
  errors.replaceChildren();
  status.textContent = "running…";
  const started = performance.now();
  try {
    let columns, rows, failed = [];
    if (many) {
      const body = { pattern: target, sql };
      const aggregate = $("#aggregate").value.trim();
      if (aggregate) body.aggregate = aggregate;
      const found = await api("POST", "/v1/query-many", body);
      ({ columns, rows } = found);
      failed = found.errors.map((e) => `${e.database}: ${e.error.type}: ${e.error.message}`);
    } else {
      const found = await api("POST", `/v1/databases/${encodeURIComponent(target)}/query`,
        { sql });
      ({ columns, rows } = found.results[0]);
    }
    fill($("#result"), columns, rows.map((r) => r.map(shown)));
    const ms = Math.round(performance.now() - started);
    status.textContent = `${rows.length} row(s) in ${ms} ms` +
      (failed.length ? `, ${failed.length} database(s) failed` : "");
    errors.replaceChildren(...failed.map((text) => {
      const li = document.createElement("li");
      li.textContent = text;
      return li;
    }));
  } catch (error) {
    fill($("#result"), [], []);
    status.textContent = "";
    const li = document.createElement("li");
    li.textContent = error.message;
    errors.replaceChildren(li);
  }
}

let typing = null;
$("#search").addEventListener("input", () => {
  clearTimeout(typing);
  typing = setTimeout(() => {
    state.contains = $("#search").value.trim();
    state.after = "";
    refresh();
  }, 200);
});
$("#next").addEventListener("click", () => { state.after = state.next || ""; refresh(); });
$("#first").addEventListener("click", () => { state.after = ""; refresh(); });
$("#console").addEventListener("submit", run);
refresh();
setInterval(refresh, REFRESH_MS);
