-- wrk script: POST /v1/invoices with a fresh Idempotency-Key per request.
-- Usage: BONOPAY_KEY=bp_live_... wrk -s benches/wrk/post_invoice.lua URL/v1/invoices
-- The body is examples/invoice.json (read once).
local f = assert(io.open("examples/invoice.json", "rb"))
local body = f:read("*a")
f:close()
local key = os.getenv("BONOPAY_KEY") or ""
local counter = 0
local thread_id = 0

function setup(thread)
  thread:set("tid", thread_id)
  thread_id = thread_id + 1
end

function init(args)
  math.randomseed(os.time() + (tid or 0))
  prefix = string.format("wrk-%d-%d-%d", os.time(), tid or 0, math.random(1, 1e9))
end

function request()
  counter = counter + 1
  return wrk.format("POST", nil, {
    ["Authorization"] = "Bearer " .. key,
    ["Content-Type"] = "application/json",
    ["Idempotency-Key"] = prefix .. "-" .. counter,
  }, body)
end

function done(summary, latency, requests)
  io.write(string.format("p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms, %d requests, %.0f/s\n",
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000,
    summary.requests, summary.requests / (summary.duration / 1e6)))
end
