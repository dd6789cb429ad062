-- wrk script of the end-to-end load test: every request is pre-formatted at start.
-- args: method, path, body ("" for none), proofs file prefix ("-" for a fixed request).
-- A proofs file holds the capability header value on its first line, then one fresh
-- DPoP header value a line; thread N reads <prefix>.N. Each proof is sent once; past the
-- last one the thread starts over (replays: the driver counts non-2xx answers).
local counter = 0

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
end

function init(args)
  local method, path, body, prefix = args[1], args[2], args[3], args[4]
  if body == "" then body = nil end
  reqs = {}
  local headers = {}
  if body ~= nil then headers["content-type"] = "application/json" end
  if prefix == "-" then
    reqs[1] = wrk.format(method, path, headers, body)
  else
    local cap = nil
    for line in io.lines(prefix .. "." .. id) do
      if cap == nil then
        cap = line
      else
        headers["x-chio-capability"] = cap
        headers["x-chio-dpop"] = line
        reqs[#reqs + 1] = wrk.format(method, path, headers, body)
      end
    end
  end
  i = 0
end

function request()
  i = i + 1
  if i > #reqs then i = 1 end
  return reqs[i]
end
