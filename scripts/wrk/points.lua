-- wrk script for scripts/bench.sh: the points of examples/bench.rs, with the same requests,
-- driven by wrk (Debian's `wrk`), the generator the issue's rqlite figures were taken with.
-- It costs less CPU per request than bench.rs's reqwest client, which shares the two cores with
-- the cluster. Environment:
--   MODE   insert | queued | stmts | batch | select | etcd-put | etcd-range | etcd-range-linearizable
--   LEVEL  read consistency level (select; default weak)
--   ROWS   rows (select) or keys (etcd-range*) preloaded by `bench --setup-only` (default 10000)
--   BATCH  statements (stmts) or rows (batch) per request (default 100)
-- A request counts only if it answered 2xx with no `"error"` in its body (a statement error,
-- or etcd's error object). `done` prints one line in bench.rs's format, which bench.sh reads.

local mode = os.getenv("MODE") or "insert"
local level = os.getenv("LEVEL") or "weak"
local rows = tonumber(os.getenv("ROWS") or "10000")
local batch = tonumber(os.getenv("BATCH") or "100")

local bit = require("bit")
local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local function b64(s)
  local out, n = {}, #s
  for i = 1, n, 3 do
    local a, b, c = s:byte(i, i + 2)
    local v = bit.bor(bit.lshift(a, 16), bit.lshift(b or 0, 8), c or 0)
    local function ch(shift)
      local i = bit.band(bit.rshift(v, shift), 63) + 1
      return alphabet:sub(i, i)
    end
    out[#out + 1] = ch(18) .. ch(12) .. (b and ch(6) or "=") .. (c and ch(0) or "=")
  end
  return table.concat(out)
end

-- Threads: each gets its own block of ids, so inserts never collide (bench.rs starts at 1e6).
local threads, counter = {}, 0
function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
  threads[#threads + 1] = thread
end

local json = { ["Content-Type"] = "application/json" }
local next_id, range_bodies, select_prefix

function init(args)
  errors = 0
  next_id = 1000000 + tid * 1000000000
  math.randomseed(os.time() + tid * 7919)
  if mode:sub(1, 10) == "etcd-range" then
    local ser = mode == "etcd-range" and "true" or "false"
    range_bodies = {}
    for i = 0, rows - 1 do
      range_bodies[i] = '{"key":"' .. b64("bench/" .. i) .. '","serializable":' .. ser .. "}"
    end
  end
  select_prefix = "/db/query?level=" .. level .. "&q=SELECT%20v%20FROM%20bench%20WHERE%20id%3D"
end

local function take(n)
  local first = next_id
  next_id = next_id + n
  return first
end

function request()
  if mode == "select" then
    return wrk.format("GET", select_prefix .. math.random(0, rows - 1))
  elseif mode == "insert" or mode == "queued" then
    local id = take(1)
    local path = mode == "queued" and "/db/execute?queue" or "/db/execute"
    return wrk.format("POST", path, json,
      '[["INSERT INTO bench(id, v) VALUES(?, ?)", ' .. id .. ', "value ' .. id .. '"]]')
  elseif mode == "stmts" then
    local first, parts = take(batch), {}
    for i = first, first + batch - 1 do
      parts[#parts + 1] = '["INSERT INTO bench(id, v) VALUES(?, ?)", ' .. i .. ', "value ' .. i .. '"]'
    end
    return wrk.format("POST", "/db/execute", json, "[" .. table.concat(parts, ",") .. "]")
  elseif mode == "batch" then
    local first, parts = take(batch), {}
    for i = first, first + batch - 1 do
      parts[#parts + 1] = "(" .. i .. ", 'value " .. i .. "')"
    end
    return wrk.format("POST", "/db/execute", json,
      '["INSERT INTO bench(id, v) VALUES ' .. table.concat(parts, ",") .. '"]')
  elseif mode == "etcd-put" then
    local id = take(1)
    return wrk.format("POST", "/v3/kv/put", json,
      '{"key":"' .. b64("bench/" .. id) .. '","value":"' .. b64("value " .. id) .. '"}')
  elseif range_bodies then
    return wrk.format("POST", "/v3/kv/range", json, range_bodies[math.random(0, rows - 1)])
  end
  error("unknown MODE " .. mode)
end

function response(status, headers, body)
  if status < 200 or status > 299 or body:find('"error"', 1, true) then
    errors = errors + 1
  end
end

function done(summary, latency, requests)
  -- summary.requests counts answers only; a socket error or timeout never gave one.
  local failed = 0
  for _, t in ipairs(threads) do failed = failed + t:get("errors") end
  local ok = summary.requests - math.min(summary.requests, failed)
  local e = summary.errors
  local secs = summary.duration / 1e6
  local conns = tonumber(os.getenv("CONNS") or "0")
  -- Latency: wrk's histogram of every answer, with wrk's correction for coordinated omission
  -- (bench.rs reports raw percentiles of successful requests).
  io.write(string.format(
    "mode=%s c=%d nodes=1 level=%s ops=%d ops/s=%.0f rows/s=%.0f p50=%.2fms p99=%.2fms errors=%d gen=wrk\n",
    mode, conns, mode == "select" and level or "-", ok, ok / secs,
    ok / secs * ((mode == "stmts" or mode == "batch") and batch or 1),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    failed + e.connect + e.read + e.write + e.timeout))
end
