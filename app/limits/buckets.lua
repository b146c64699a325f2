-- Prepended to the team scripts (shared.script_source): a team's hash, as window.TeamWindow holds it, kept
-- so that a decision reads a few fields whatever the number of buckets. Fields: 'b<number>' =
-- '<requests>:<tokens>' per bucket (a 1/60 slice of the window), the running totals 'n' and 't' of the
-- buckets kept, 'lo' the oldest bucket kept, 'day', 'day_used'. Buckets leave (HDEL) once their last
-- microsecond is a window old; each leaves once, so the walk below is short on average.
-- Mirrors window._expire, _retry, _totals, _reset.
local function fmt(x) return string.format('%.0f', x) end
local BUCKETS = 60

local function counts(meta, b)
  local v = redis.call('HGET', meta, 'b' .. fmt(b))
  if not v then return nil end
  local n, t = string.match(v, '^(%d+):(%d+)$')
  return tonumber(n), tonumber(t)
end

local function gone_at(w, b) return (b + 1) * w.size + w.window - 1 end

-- The team's totals with the buckets that left the window taken out.
local function load_team(meta, now, window)
  local size = math.ceil(window / BUCKETS)
  local v = redis.call('HMGET', meta, 'n', 't', 'lo', 'day', 'day_used')
  local w = {meta = meta, size = size, window = window, n = tonumber(v[1]) or 0, t = tonumber(v[2]) or 0,
             lo = tonumber(v[3]), day = tonumber(v[4]) or -1, day_used = tonumber(v[5]) or 0}
  local cb = math.floor(now / size)
  local fb = math.floor((now - window + 1) / size)  -- the oldest bucket still counting
  if w.n == 0 or not w.lo then
    w.n, w.t, w.lo = 0, 0, cb
  elseif w.lo < fb then
    if fb - w.lo > BUCKETS + 1 then  -- every bucket kept left the window (they span at most 61 numbers)
      for b = w.lo, w.lo + BUCKETS + 1 do redis.call('HDEL', meta, 'b' .. fmt(b)) end
      w.n, w.t = 0, 0
    else
      for b = w.lo, fb - 1 do
        local n, t = counts(meta, b)
        if n then
          w.n, w.t = w.n - n, w.t - t
          redis.call('HDEL', meta, 'b' .. fmt(b))
        end
      end
    end
    w.lo = fb
  end
  if w.n == 0 then w.t, w.lo = 0, cb end
  while w.lo < cb and redis.call('HEXISTS', meta, 'b' .. fmt(w.lo)) == 0 do w.lo = w.lo + 1 end
  return w
end

-- Until the oldest buckets leaving the window free `need` (slot 1: requests, 2: tokens).
local function retry(w, slot, need, now)
  local freed = 0
  for b = w.lo, math.floor(now / w.size) do
    local n, t = counts(w.meta, b)
    if n then
      if slot == 1 then freed = freed + n else freed = freed + t end
      if freed >= need then return gone_at(w, b) - now end
    end
  end
  return w.window
end

local function reset_in(w, now)
  if w.n == 0 then return 0 end
  return gone_at(w, w.lo) - now
end

-- Adds (requests, tokens) to bucket b, and to the totals.
local function add(w, b, dn, dt)
  local n, t = counts(w.meta, b)
  n, t = (n or 0) + dn, math.max(0, (t or 0) + dt)
  redis.call('HSET', w.meta, 'b' .. fmt(b), fmt(n) .. ':' .. fmt(t))
end

local function save(w)
  redis.call('HSET', w.meta, 'n', fmt(w.n), 't', fmt(w.t), 'lo', fmt(w.lo))
end
