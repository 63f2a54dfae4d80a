// sqlraft web console. Plain JavaScript, no dependencies, no build step.
//
// The page is a client of the node's public API, like any other: it sends SQL to
// /db/request, reads the schema through /db/query, polls /nodes and /status, and downloads
// and restores through /db/backup and /db/load. Every value that comes from the database or
// the cluster reaches the DOM as text (textContent, attributes), never as markup.

const POLL_MS = 3000;
const MAX_ROWS = 1000; // rows drawn per result; the rest is counted, not shown
const MAX_CELL = 500; // characters drawn per cell; the whole value is in the tooltip
const LONG_CELL = 40; // cells wider than the column (CSS max-width) get a tooltip
const FIRST_ROWS = 100;

const $ = (id) => document.getElementById(id);

/** Builds an element. Children that are not nodes become text nodes, never HTML. */
function el(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = String(v);
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c !== null && c !== undefined && c !== false) e.append(c);
  }
  return e;
}

/** A URL on this node. Built from the origin so that credentials typed into the address bar
 * (http://user:pass@host/) never end up in a request URL, which fetch refuses. */
const url = (path) => location.origin + path;

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** Integers beyond 2^53 keep their exact digits (as BigInt) where the browser tells us the
 * source text; elsewhere they are ordinary numbers. */
function parseJson(text) {
  return JSON.parse(text, (key, value, ctx) => {
    if (typeof value === "number" && !Number.isSafeInteger(value) && ctx && /^-?\d+$/.test(ctx.source)) {
      return BigInt(ctx.source);
    }
    return value;
  });
}

/** Calls the API; resolves to the parsed JSON body, rejects with an ApiError. */
async function api(path, { method = "GET", json, body, contentType } = {}) {
  const init = { method, headers: {}, credentials: "same-origin", cache: "no-store" };
  if (json !== undefined) {
    init.body = JSON.stringify(json);
    init.headers["Content-Type"] = "application/json";
  } else if (body !== undefined) {
    init.body = body;
    if (contentType) init.headers["Content-Type"] = contentType;
  }
  let r;
  try {
    r = await fetch(url(path), init);
  } catch (e) {
    throw new ApiError(0, `node unreachable (${e.message})`);
  }
  const text = await r.text();
  if (!r.ok) {
    const why = text.trim() || r.statusText;
    if (r.status === 401) throw new ApiError(401, "not permitted: this user lacks the permission for " + path.split("?")[0]);
    throw new ApiError(r.status, `${r.status}${why ? ": " + why : ""}`);
  }
  if (!text.trim()) return {};
  try {
    return parseJson(text);
  } catch {
    throw new ApiError(r.status, "unexpected answer: " + text.slice(0, 200));
  }
}

// ---------------------------------------------------------------------------------------
// Formatting

function fmtTime(seconds) {
  if (typeof seconds !== "number" || !isFinite(seconds)) return "";
  if (seconds < 0.001) return `${Math.round(seconds * 1e6)} µs`;
  if (seconds < 1) return `${(seconds * 1e3).toFixed(seconds < 0.01 ? 2 : 1)} ms`;
  return `${seconds.toFixed(2)} s`;
}

function fmtBytes(n) {
  if (typeof n !== "number") return "";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

const plural = (n, word) => `${n} ${word}${n === 1 || n === 1n ? "" : "s"}`;

/** A double-quoted SQL identifier. */
const ident = (name) => `"${String(name).replaceAll('"', '""')}"`;

const oneLine = (sql) => sql.replace(/\s+/g, " ").trim();

// ---------------------------------------------------------------------------------------
// Splitting the editor's text into statements

/** Splits SQL text at top-level semicolons: not inside quotes, brackets or comments, and not
 * inside a CREATE TRIGGER body (whose statements end with `;` until its END). Comment-only
 * pieces are dropped. Each statement then gets its own result. */
export function splitSql(text) {
  const out = [];
  let start = 0;
  let i = 0;
  let words = []; // the first three words of the current statement
  let hasToken = false;
  let lastWasEnd = false;
  let caseDepth = 0;
  const n = text.length;
  const isTrigger = () =>
    words[0] === "CREATE" && (words[1] === "TRIGGER" || ((words[1] === "TEMP" || words[1] === "TEMPORARY") && words[2] === "TRIGGER"));
  const skipTo = (close, from) => {
    const j = text.indexOf(close, from);
    return j < 0 ? n : j + close.length;
  };
  while (i < n) {
    const c = text[i];
    if (c === "'" || c === '"' || c === "`") {
      i = skipTo(c, i + 1);
      hasToken = true;
      lastWasEnd = false;
    } else if (c === "[") {
      i = skipTo("]", i + 1);
      hasToken = true;
      lastWasEnd = false;
    } else if (c === "-" && text[i + 1] === "-") {
      i = skipTo("\n", i + 2);
    } else if (c === "/" && text[i + 1] === "*") {
      i = skipTo("*/", i + 2);
    } else if (/[A-Za-z0-9_$]/.test(c)) {
      let j = i + 1;
      while (j < n && /[A-Za-z0-9_$]/.test(text[j])) j++;
      const w = text.slice(i, j).toUpperCase();
      if (words.length < 3) words.push(w);
      if (w === "CASE") caseDepth++;
      if (w === "END" && caseDepth > 0) {
        caseDepth--;
        lastWasEnd = false;
      } else {
        lastWasEnd = w === "END";
      }
      hasToken = true;
      i = j;
    } else if (c === ";") {
      if (!isTrigger() || lastWasEnd) {
        const stmt = text.slice(start, i).trim();
        if (hasToken && stmt) out.push(stmt);
        start = i + 1;
        words = [];
        hasToken = false;
        caseDepth = 0;
      }
      lastWasEnd = false;
      i++;
    } else {
      if (!/\s/.test(c)) {
        hasToken = true;
        lastWasEnd = false;
      }
      i++;
    }
  }
  const rest = text.slice(start).trim();
  if (hasToken && rest) out.push(rest);
  return out;
}

// ---------------------------------------------------------------------------------------
// Running SQL

let runs = 0;

function setRunning(running, note = "") {
  $("run").disabled = running;
  $("run-status").textContent = note;
}

/** Runs the editor's statements (or `sql`) at the chosen level; shows one card per statement. */
async function run(sql = $("sql").value, { note } = {}) {
  const stmts = splitSql(sql);
  const results = $("results");
  runs += 1;
  results.dataset.run = String(runs);
  if (!stmts.length) {
    results.replaceChildren(el("p", { class: "muted", text: "Nothing to run: type SQL above." }));
    results.dataset.state = "done";
    return;
  }
  const level = $("level").value;
  const tx = $("tx").checked;
  results.dataset.state = "running";
  setRunning(true, "Running…");
  const started = performance.now();
  let wrote = false;
  try {
    const path = `/db/request?timings&level=${encodeURIComponent(level)}${tx ? "&transaction" : ""}`;
    const resp = await api(path, { method: "POST", json: stmts });
    const rtt = (performance.now() - started) / 1000;
    const list = resp.results ?? [];
    const cards = stmts.map((s, i) => {
      if (i >= list.length) return resultCard(i, s, { skipped: true });
      return resultCard(i, s, list[i], note);
    });
    if (resp.error) cards.unshift(el("p", { class: "error", role: "alert", text: resp.error }));
    results.replaceChildren(...cards);
    results.dataset.state = list.some((r) => r.error) || resp.error ? "error" : "done";
    wrote = list.some((r) => !("columns" in r) && !("rows" in r) && !r.error);
    const server = typeof resp.time === "number" ? ` · server ${fmtTime(resp.time)}` : "";
    setRunning(false, `${plural(stmts.length, "statement")} at ${level} · ${fmtTime(rtt)} round trip${server}`);
  } catch (e) {
    results.replaceChildren(el("p", { class: "error", role: "alert", text: e.message }));
    results.dataset.state = "error";
    setRunning(false, "");
  }
  if (wrote) loadSchema();
}

function resultCard(i, sql, res, note) {
  const head = el(
    "div",
    { class: "result-head" },
    el("span", { class: "muted", text: `#${i + 1}` }),
    el("span", { class: "sql", title: sql, text: oneLine(sql) }),
    typeof res.time === "number" ? el("span", { class: "muted", text: fmtTime(res.time) }) : null,
  );
  let body;
  if (res.skipped) {
    body = el("p", { class: "muted", text: "Not run: an earlier statement failed." });
  } else if (res.error) {
    body = el("p", { class: "error", role: "alert", text: res.error });
  } else if ("columns" in res) {
    body = rowsView(res, note);
  } else {
    const n = res.rows_affected ?? 0;
    const id = res.last_insert_id ? ` · last insert id ${res.last_insert_id}` : "";
    body = el("p", { class: "ok", text: `${plural(n, "row")} affected${id}` });
  }
  return el("div", { class: "result" }, head, el("div", { class: "result-body" }, body));
}

function rowsView(res, note) {
  const columns = res.columns ?? [];
  const types = res.types ?? [];
  const values = res.values ?? [];
  const head = el(
    "tr",
    {},
    columns.map((c, j) => el("th", {}, String(c), types[j] ? el("span", { class: "type", text: types[j] }) : null)),
  );
  const body = values.slice(0, MAX_ROWS).map((row) => el("tr", {}, row.map(cell)));
  const table = el("table", { class: "grid rows" }, el("thead", {}, head), el("tbody", {}, body));
  let summary = plural(values.length, "row");
  if (values.length > MAX_ROWS) summary += `, the first ${MAX_ROWS} shown`;
  if (note) summary += ` · ${note}`;
  return el("div", {}, el("div", { class: "scroll" }, table), el("p", { class: "summary", text: summary }));
}

function cell(v) {
  if (v === null || v === undefined) return el("td", {}, el("span", { class: "null", text: "NULL" }));
  const s = typeof v === "object" ? JSON.stringify(v) : String(v);
  const td = el("td", { text: s.length > MAX_CELL ? s.slice(0, MAX_CELL) + "…" : s });
  if (typeof v === "number" || typeof v === "bigint") td.className = "num";
  if (s.length > LONG_CELL || s.includes("\n")) {
    td.title = s;
    td.classList.add("long");
  }
  return td;
}

// ---------------------------------------------------------------------------------------
// Tables and views

const SCHEMA_SQL =
  "SELECT type, name, sql FROM sqlite_master WHERE type IN ('table', 'view') " +
  "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name";
const MAX_COUNTED = 200; // tables whose rows are counted

async function loadSchema() {
  const list = $("tables");
  const err = $("schema-error");
  list.dataset.state = "loading";
  const level = $("level").value;
  try {
    const r = await api(`/db/query?level=${encodeURIComponent(level)}`, { method: "POST", json: [SCHEMA_SQL] });
    const res = r.results?.[0] ?? {};
    if (res.error) throw new Error(res.error);
    const objects = (res.values ?? []).map(([type, name, sql]) => ({ type, name, sql }));
    const counted = objects.filter((o) => o.type === "table").slice(0, MAX_COUNTED);
    const counts = new Map();
    if (counted.length) {
      const stmts = counted.map((t) => `SELECT COUNT(*) FROM ${ident(t.name)}`);
      const c = await api(`/db/query?level=${encodeURIComponent(level)}`, { method: "POST", json: stmts });
      (c.results ?? []).forEach((x, i) => {
        if (!x.error && x.values) counts.set(counted[i].name, x.values[0][0]);
      });
    }
    list.replaceChildren(...objects.map((o) => tableItem(o, counts.get(o.name))));
    $("schema-empty").hidden = objects.length > 0;
    err.hidden = true;
    list.dataset.state = "done";
  } catch (e) {
    err.textContent = e.message;
    err.hidden = false;
    list.dataset.state = "error";
  }
}

function tableItem(o, count) {
  const open = () => {
    const sql = `SELECT * FROM ${ident(o.name)} LIMIT ${FIRST_ROWS};`;
    $("sql").value = sql;
    saveEditor();
    const note = typeof count !== "undefined" && count > FIRST_ROWS ? `the first ${FIRST_ROWS} of ${count}` : undefined;
    run(sql, { note });
  };
  const tag =
    o.type === "view"
      ? el("span", { class: "kind", text: "view" })
      : el("span", { class: "count", text: count === undefined ? "" : plural(count, "row") });
  return el(
    "li",
    { "data-name": o.name, "data-type": o.type },
    el(
      "div",
      { class: "row" },
      el("button", { type: "button", class: "table-name", title: `Show the first ${FIRST_ROWS} rows`, onclick: open }, o.name),
      tag,
    ),
    o.sql ? el("details", {}, el("summary", { text: "schema" }), el("pre", { text: o.sql })) : null,
  );
}

// ---------------------------------------------------------------------------------------
// Cluster

async function pollCluster() {
  try {
    const [nodes, status] = await Promise.all([api("/nodes?nonvoters&ver=2&timeout=2s"), api("/status")]);
    renderNodes(nodes, status);
    renderNode(status);
    $("cluster-error").hidden = true;
    $("cluster-updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
    $("cluster").dataset.state = "fresh";
  } catch (e) {
    $("cluster-error").textContent = e.message;
    $("cluster-error").hidden = false;
    $("cluster").dataset.state = "stale";
    setLink(false, e.status === 401 ? "not permitted" : "unreachable");
  } finally {
    // A hidden tab polls rarely; the next poll starts only after this one ends.
    setTimeout(pollCluster, document.hidden ? POLL_MS * 5 : POLL_MS);
  }
}

function nodeList(nodes) {
  if (Array.isArray(nodes.nodes)) return nodes.nodes;
  return Object.entries(nodes).map(([id, n]) => ({ id, ...n }));
}

/** Only http(s) addresses become links: a node's address is data, not trusted markup. */
function consoleLink(apiAddr) {
  try {
    const u = new URL(apiAddr);
    if (u.protocol === "http:" || u.protocol === "https:") return new URL("/console/", u).href;
  } catch {
    // not a URL: shown as text only
  }
  return null;
}

function renderNodes(nodes, status) {
  const me = status?.store?.node_id;
  const rows = nodeList(nodes)
    .sort((a, b) => String(a.id).localeCompare(String(b.id), undefined, { numeric: true }))
    .map((n) => {
      const api = String(n.api_addr ?? "");
      const link = consoleLink(api);
      const shown = api.replace(/^https?:\/\//, "");
      return el(
        "tr",
        { class: n.leader ? "leader" : "", "data-id": n.id, "data-leader": n.leader ? "true" : "false" },
        el(
          "td",
          {},
          String(n.id),
          n.leader ? el("span", { class: "badge leader", title: "The leader", text: "leader" }) : null,
          String(n.id) === String(me) ? el("span", { class: "badge me", title: "The node serving this page", text: "this" }) : null,
        ),
        el(
          "td",
          {},
          el(
            "div",
            { title: `HTTP API: ${api}` },
            link ? el("a", { href: link, title: "Open this node's console" }, shown) : shown,
            el("span", { class: "tls", text: api.startsWith("https:") ? "TLS" : "" }),
          ),
          el("div", { class: "muted", title: "Raft address", text: `raft ${n.addr ?? "?"}` }),
        ),
        el("td", { text: n.voter ? "voter" : "non-voter" }),
        el(
          "td",
          { class: n.reachable ? "reach-yes" : "reach-no", title: n.error ?? fmtTime(n.time) },
          n.reachable ? "✓ yes" : "✗ no",
        ),
      );
    });
  $("nodes").tBodies[0].replaceChildren(...rows);
}

function renderNode(status) {
  const store = status.store ?? {};
  const raft = store.raft ?? {};
  const leader = store.leader ?? {};
  const tls = status.http?.tls?.enabled === "true" || status.cluster?.https === "true";
  const facts = [
    ["Node", `${store.node_id ?? "?"} (${raft.state ?? "?"})`],
    ["Leader", leader.node_id ? `${leader.node_id} at ${leader.addr}` : "none known"],
    ["Term", raft.term],
    ["Commit index", raft.commit_index],
    ["Applied index", raft.applied_index],
    ["Last log index", raft.last_log_index],
    ["Last snapshot", raft.last_snapshot_index],
    ["HTTPS", tls ? "on" : "off"],
    ["Auth", status.http?.auth ?? "?"],
    ["Version", status.build?.version ?? "?"],
    ["Uptime", String(status.node?.uptime ?? "?").replace(/(\.\d)\d+/, "$1")],
  ];
  $("raft").replaceChildren(
    ...facts.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { "data-fact": k, text: v ?? "–" })]),
  );
  $("this-node").textContent =
    `node ${store.node_id ?? "?"} · ${status.http?.bind_addr ?? location.host} · ${status.build?.version ?? ""}`;
  const leads = raft.state === "Leader";
  setLink(true, leads || !leader.node_id ? raft.state ?? "connected" : `${raft.state} · leader is node ${leader.node_id}`);
}

function setLink(ok, text) {
  const p = $("link");
  p.dataset.ok = ok ? "yes" : "no";
  p.textContent = text;
}

// ---------------------------------------------------------------------------------------
// Restore

function initRestore() {
  const file = $("restore-file");
  const confirmBox = $("restore-confirm");
  const status = $("restore-status");
  file.addEventListener("change", () => {
    $("restore").disabled = !file.files.length;
    confirmBox.hidden = true;
  });
  let binary = false;
  $("restore-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const f = file.files[0];
    if (!f) return;
    // The node tells the formats apart by the SQLite header; so does the question asked.
    const head = new Uint8Array(await f.slice(0, 16).arrayBuffer());
    binary = new TextDecoder().decode(head) === "SQLite format 3\0";
    $("restore-question").textContent = binary
      ? "Replace the whole database with the SQLite file "
      : "Run the SQL dump ";
    $("restore-name").textContent = `${f.name} (${fmtBytes(f.size)})`;
    $("restore-after").textContent = binary ? "?" : " against the database?";
    confirmBox.hidden = false;
    $("restore-yes").focus();
  });
  $("restore-no").addEventListener("click", () => {
    confirmBox.hidden = true;
  });
  $("restore-yes").addEventListener("click", async () => {
    const f = file.files[0];
    confirmBox.hidden = true;
    if (!f) return;
    status.className = "muted";
    status.textContent = `Restoring ${f.name}…`;
    status.dataset.state = "running";
    const started = performance.now();
    try {
      const r = await api("/db/load?timings", {
        method: "POST",
        body: f,
        contentType: binary ? "application/octet-stream" : "text/plain",
      });
      const failed = (r.results ?? []).filter((x) => x.error);
      if (failed.length || r.error) throw new Error(r.error ?? failed[0].error);
      status.className = "ok";
      status.textContent = `Restored ${f.name} (${binary ? "SQLite file" : "SQL dump"}) in ${fmtTime((performance.now() - started) / 1000)}.`;
      status.dataset.state = "done";
    } catch (e) {
      status.className = "error";
      status.textContent = `Restore failed: ${e.message}`;
      status.dataset.state = "error";
    }
    loadSchema();
  });
}

// ---------------------------------------------------------------------------------------
// Editor state and start-up

function saveEditor() {
  try {
    localStorage.setItem("sqlraft.sql", $("sql").value);
    localStorage.setItem("sqlraft.level", $("level").value);
  } catch {
    // storage disabled: nothing to keep
  }
}

function restoreEditor() {
  try {
    const sql = localStorage.getItem("sqlraft.sql");
    const level = localStorage.getItem("sqlraft.level");
    if (sql !== null) $("sql").value = sql;
    if (level && [...$("level").options].some((o) => o.value === level)) $("level").value = level;
  } catch {
    // storage disabled
  }
}

function start() {
  restoreEditor();
  $("query-form").addEventListener("submit", (e) => {
    e.preventDefault();
    run();
  });
  // Ctrl+Enter (Cmd+Enter on a Mac) runs, wherever the focus is.
  document.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
      e.preventDefault();
      run();
    }
  });
  $("sql").addEventListener("input", saveEditor);
  $("level").addEventListener("change", saveEditor);
  $("schema-refresh").addEventListener("click", loadSchema);
  initRestore();
  loadSchema();
  pollCluster();
  $("sql").focus();
}

start();
