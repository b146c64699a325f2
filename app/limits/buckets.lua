-- Prepended to the team scripts (shared.script_source): a team's hash read into buckets, as
-- window.TeamWindow holds them. Fields: 'b<number>' = '<requests>:<tokens>' per bucket (a 1/60 slice of
-- the window), 'day', 'day_used'. Mirrors window._expire, _retry, _totals, _reset.
local function fmt(x) return string.format('%.0f', x) end
local BUCKETS = 60

-- Reads the team's hash, dropping (HDEL) the buckets that left the window. Returns the state with its
-- bucket numbers ascending.
local function load_team(meta, now, window)
  local size = math.ceil(window / BUCKETS)
  local w = {size = size, window = window, nums = {}, n = {}, tok = {}, day = -1, day_used = 0, count = 0, tokens = 0}
  local flat = redis.call('HGETALL', meta)
  local gone = {}
  for i = 1, #flat, 2 do
    local f, v = flat[i], flat[i + 1]
    if f == 'day' then w.day = tonumber(v)
    elseif f == 'day_used' then w.day_used = tonumber(v)
    else
      local b = tonumber(string.sub(f, 2))
      if (b + 1) * size + window - 1 <= now then
        gone[#gone + 1] = f
      else
        local n, t = string.match(v, '^(%d+):(%d+)$')
        w.nums[#w.nums + 1] = b
        w.n[b], w.tok[b] = tonumber(n), tonumber(t)
        w.count, w.tokens = w.count + tonumber(n), w.tokens + tonumber(t)
      end
    end
  end
  if #gone > 0 then redis.call('HDEL', meta, unpack(gone)) end
  table.sort(w.nums)
  return w
end

local function gone_at(w, b) return (b + 1) * w.size + w.window - 1 end

local function retry(w, counts, need, now)
  local freed = 0
  for _, b in ipairs(w.nums) do
    freed = freed + counts[b]
    if freed >= need then return gone_at(w, b) - now end
  end
  return w.window
end

local function reset_in(w, now)
  if #w.nums == 0 then return 0 end
  return gone_at(w, w.nums[1]) - now
end

local function put(meta, w, b)
  redis.call('HSET', meta, 'b' .. fmt(b), fmt(w.n[b]) .. ':' .. fmt(w.tok[b]))
end
