-- wrk script: POST one PNG as multipart (to /predict, or /read) and check every answer.
-- Environment: BENCH_IMAGE (PNG path), BENCH_EXPECT (text every answer must hold, e.g.
-- "digit":7). Prints one JSON line at the end.

local boundary = "s4benchboundary"
local image = assert(io.open(os.getenv("BENCH_IMAGE"), "rb")):read("*a")
local expected = os.getenv("BENCH_EXPECT")

wrk.method = "POST"
wrk.headers["Content-Type"] = "multipart/form-data; boundary=" .. boundary
wrk.body = "--" .. boundary .. "\r\n"
  .. 'Content-Disposition: form-data; name="file"; filename="digit.png"\r\n'
  .. "Content-Type: image/png\r\n\r\n"
  .. image .. "\r\n--" .. boundary .. "--\r\n"

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  bad = 0
  first_bad = ""
end

function response(status, headers, body)
  if status ~= 200 or not string.find(body, expected, 1, true) then
    bad = bad + 1
    if first_bad == "" then first_bad = status .. " " .. string.sub(body, 1, 200) end
  end
end

function done(summary, latency, requests)
  local total_bad, example = 0, ""
  for _, thread in ipairs(threads) do
    total_bad = total_bad + thread:get("bad")
    if example == "" then example = thread:get("first_bad") end
  end
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.timeout
  io.write(string.format(
    'RESULT {"requests": %d, "seconds": %.3f, "bad": %d, "socket_errors": %d, '
      .. '"p50_ms": %.3f, "p99_ms": %.3f, "example_bad": %q}\n',
    summary.requests, summary.duration / 1e6, total_bad, errors,
    latency:percentile(50) / 1e3, latency:percentile(99) / 1e3, example))
end
