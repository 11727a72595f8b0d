-- wrk script: POST one prepared request body and check every answer.
-- Environment: BENCH_BODY (the body's file), BENCH_CONTENT_TYPE, BENCH_HEADER_LENGTH (optional:
-- the Open Inference Protocol's Inference-Header-Content-Length), BENCH_DIGIT (the expected
-- digit) and BENCH_ANSWER: "json" (/predict: the body holds "digit":N) or "binary" (v2 infer with
-- binary outputs, tritonclient's default: the digit is the body's last INT64, little-endian);
-- BENCH_EXPECT (optional, JSON answers): the text every answer must hold instead of "digit":N.
-- Prints one JSON line at the end.

local body = assert(io.open(os.getenv("BENCH_BODY"), "rb")):read("*a")
local digit = tonumber(os.getenv("BENCH_DIGIT"))
local binary_answer = os.getenv("BENCH_ANSWER") == "binary"
local expected_json = os.getenv("BENCH_EXPECT") or ('"digit":' .. digit)
local expected_tail = string.char(digit) .. string.rep("\0", 7)

wrk.method = "POST"
wrk.headers["Content-Type"] = os.getenv("BENCH_CONTENT_TYPE")
if os.getenv("BENCH_HEADER_LENGTH") then
  wrk.headers["Inference-Header-Content-Length"] = os.getenv("BENCH_HEADER_LENGTH")
end
wrk.body = body

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  bad = 0
  first_bad = ""
end

local function right(body)
  if binary_answer then
    return string.sub(body, -8) == expected_tail
  end
  return string.find(body, expected_json, 1, true) ~= nil
end

function response(status, headers, body)
  if status ~= 200 or not right(body) then
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
