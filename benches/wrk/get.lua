-- POST /records/get for one random key of the RECORDS loaded by http_get.sh.
local records = tonumber(os.getenv("RECORDS") or "100000")
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
math.randomseed(42)
request = function()
  local body = string.format('{"Records":[{"pk":"key-%012d","sk":""}]}', math.random(0, records - 1))
  return wrk.format(nil, nil, nil, body)
end
