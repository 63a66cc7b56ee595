-- wrk script of scripts/bench-http.sh: one connection per thread (wrk -t16 -c16), each thread
-- posting to /bench with its own session (the cookies the script created for it, in the file
-- $COOKIES, one `Cookie` header value per line). Each request adds one to the session's counter and writes
-- a 1 KiB attribute. At the end it prints one line per session (`last COOKIE COUNT`: the last
-- counter answered) and a `result` line: requests, seconds, p50 and p99 in microseconds,
-- errors (socket and non-2xx).

local cookies = {}
for line in io.lines(os.getenv("COOKIES")) do
  if #line > 0 then cookies[#cookies + 1] = line end
end

local threads = {}
local next_cookie = 1

function setup(thread)
  thread:set("cookie", cookies[next_cookie])
  next_cookie = next_cookie + 1
  table.insert(threads, thread)
end

function init(args)
  last = 0
  req = wrk.format("POST", "/bench", { ["Cookie"] = cookie, ["Content-Length"] = "0" })
end

function request()
  return req
end

function response(status, headers, body)
  if status == 200 then
    local n = tonumber(string.match(body, "(%d+)%s*$"))
    if n and n > last then last = n end
  end
end

function done(summary, latency, requests)
  for _, t in ipairs(threads) do
    io.write(string.format("last %s %d\n", t:get("cookie"), t:get("last")))
  end
  local e = summary.errors
  io.write(string.format("result %d %.6f %d %d %d\n", summary.requests, summary.duration / 1e6,
    latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.status + e.timeout))
end
