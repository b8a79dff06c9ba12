-- ig-gate benchmark traffic for wrk: cycles through a request pool written by bench/traffic.py.
--
--   IG_BENCH_POOL=pool.lua [IG_BENCH_RATE=N] wrk -t1 -c32 -d10s -s bench/wrk/mix.lua http://127.0.0.1:PORT
--
-- IG_BENCH_POOL  a Lua chunk returning {{method=, path=, headers={}, body=}, ...}
-- IG_BENCH_RATE  optional target requests/s PER wrk THREAD. Pacing is closed-loop: before each request a
--                connection claims the next free slot of a per-thread schedule (one slot every 1/RATE s)
--                and waits for it with wrk's delay(); a connection busy with a slow response claims its
--                next slot late, so (unlike wrk2) a server stall lowers the sent rate instead of being
--                charged to the latency figures (coordinated omission is not corrected).
-- done() prints one line: "IGBENCH {json}" with req/s inputs, latency percentiles in microseconds and
-- the count of every response status (from response(), summed over threads).

local pool_path = os.getenv("IG_BENCH_POOL")
if not pool_path then error("IG_BENCH_POOL is not set (a request pool written by bench/traffic.py)") end
local rate = tonumber(os.getenv("IG_BENCH_RATE") or "")

local requests, count, index = {}, 0, 0
statuses = {}

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  for i, r in ipairs(dofile(pool_path)) do
    requests[i] = wrk.format(r.method, r.path, r.headers, r.body)
  end
  count = #requests
  if count == 0 then error("IG_BENCH_POOL " .. pool_path .. " holds no requests") end
end

function request()
  index = index % count + 1
  return requests[index]
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

if rate and rate > 0 then
  local ffi = require("ffi")
  ffi.cdef [[
    typedef struct { long tv_sec; long tv_nsec; } ig_timespec;
    int clock_gettime(int clk_id, ig_timespec *tp);
  ]]
  local ts = ffi.new("ig_timespec")
  local function now_ms()
    ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
    return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
  end
  local interval_ms = 1000 / rate
  local next_slot = nil

  function delay()
    local now = now_ms()
    if next_slot == nil or next_slot < now then next_slot = now end
    local wait = next_slot - now
    next_slot = next_slot + interval_ms
    return math.floor(wait + 0.5)
  end
end

function done(summary, latency, _)
  local counts = {}
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses")) do
      counts[status] = (counts[status] or 0) + n
    end
  end
  local parts = {}
  for status, n in pairs(counts) do
    table.insert(parts, string.format('"%d": %d', status, n))
  end
  local p = {}
  for _, q in ipairs({50, 75, 90, 95, 99, 99.9}) do
    table.insert(p, string.format('"p%s": %d', tostring(q), latency:percentile(q)))
  end
  local e = summary.errors
  io.write(string.format(
    'IGBENCH {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    '"latency_us": {%s, "mean": %.1f, "stdev": %.1f, "max": %d}, "statuses": {%s}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    table.concat(p, ", "), latency.mean, latency.stdev, latency.max, table.concat(parts, ", ")))
end
