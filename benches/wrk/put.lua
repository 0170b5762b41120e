-- POST /records/put of one record with a random key: one single-op log entry per request.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
math.randomseed(7)
request = function()
  local body = string.format('{"Records":[{"pk":"w-%d","sk":"","data":{"v":%d,"enabled":true}}]}',
    math.random(0, 999999), math.random(0, 1000000))
  return wrk.format(nil, nil, nil, body)
end
