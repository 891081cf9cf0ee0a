-- wrk: GET an order by number, a random order of a random client's merchant, with that
-- client's merchant key (scripts/bench-api-wrk.sh; `facepay-bench api --external` writes
-- the clients file).
--
-- The requests are drawn at start-up (REQUESTS_PREBUILT random ones per wrk thread) and
-- sent in turn: formatting each request in Lua as it is sent took wrk ~20 % of a core,
-- taken from the server it shares the two cores with. Every request is still a random
-- client with a random order of its merchant.
dofile(os.getenv("FACEPAY_WRK_CLIENTS"))
local path_of = os.getenv("FACEPAY_WRK_ROUTE") or "orders"
local REQUESTS_PREBUILT = 100000
local prebuilt = {}
local next_at = 1

init = function(args)
   math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
   for i = 1, REQUESTS_PREBUILT do
      local c = clients[math.random(#clients)]
      local path
      if path_of == "orders" then
         path = string.format("/v1/merchants/%s/orders/B%09d", c[1], math.random(0, per_merchant - 1))
      else
         path = string.format("/v1/merchants/%s/transactions?limit=20", c[1])
      end
      prebuilt[i] = wrk.format("GET", path, { ["Authorization"] = "Bearer " .. c[2] })
   end
end

request = function()
   local r = prebuilt[next_at]
   next_at = next_at % REQUESTS_PREBUILT + 1
   return r
end

done = function(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      '{"requests":%d,"requests_per_s":%.1f,"p50_ms":%.3f,"p99_ms":%.3f,"max_ms":%.3f,"not_ok":%d,"socket_errors":%d}\n',
      summary.requests, summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000,
      latency:percentile(99) / 1000, latency.max / 1000, e.status, e.connect + e.read + e.write + e.timeout))
end
