-- Prepended to the team scripts (shared.script_source): a team's hash, as window.TeamWindow holds it, kept
-- so that a decision reads a few fields whatever the number of buckets. Fields: 'b<number>' =
-- '<requests>:<tokens>' per bucket (a 1/60 slice of the window), the running totals 'n' and 't' of the
-- buckets kept, 'lo' the oldest bucket kept, 'day', 'day_used'. Buckets leave (HDEL) once their last
-- microsecond is a whole window old; each leaves once, so the walk below is short on average.
-- Cost: a decision in a second that already has its bucket is TIME, one HMGET (the totals and the current
-- bucket together) and one HSET (every changed field at once), whatever the number of requests it decides;
-- the walk over buckets that leave, the PEXPIRE and the retry walk happen only when something changed
-- (about once a second, or on a refusal).
-- Mirrors window._expire, _retry, _totals, _reset.
local function fmt(x) return string.format('%.0f', x) end
local BUCKETS = 60

local function parse(v)
  if not v then return nil end
  local n, t = string.match(v, '^(%d+):(%d+)$')
  return tonumber(n), tonumber(t)
end

local function counts(meta, b) return parse(redis.call('HGET', meta, 'b' .. fmt(b))) end

local function gone_at(w, b) return (b + 1) * w.size + w.window - 1 end

-- The team's totals with the buckets that left the window taken out, and the current bucket's counts.
local function load_team(meta, now, window)
  local size = math.ceil(window / BUCKETS)
  local cb = math.floor(now / size)
  local v = redis.call('HMGET', meta, 'n', 't', 'lo', 'day', 'day_used', 'b' .. fmt(cb))
  local w = {meta = meta, size = size, window = window, n = tonumber(v[1]) or 0, t = tonumber(v[2]) or 0,
             lo = tonumber(v[3]), day = tonumber(v[4]) or -1, day_used = tonumber(v[5]) or 0, cb = cb,
             fresh = not v[3], out = {}, mod = {}}
  w.cn, w.ct = parse(v[6])
  w.was = {w.n, w.t, w.lo}
  local fb = math.floor((now - window + 1) / size)  -- the oldest bucket still counting
  local moved = false
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
    w.lo, moved = fb, true
  end
  if w.n == 0 then w.t, w.lo = 0, cb end
  -- Without buckets leaving, 'lo' already names a bucket that exists (every decision leaves it so).
  if moved then
    while w.lo < cb and redis.call('HEXISTS', meta, 'b' .. fmt(w.lo)) == 0 do w.lo = w.lo + 1 end
  end
  return w
end

-- A bucket's counts as the decision sees them: the current bucket as this script left it so far (an
-- admission of several requests changes it before it is saved), a past one given back to as changed (mod),
-- any other as stored.
local function bucket(w, b)
  if b == w.cb then return w.cn, w.ct end
  local m = w.mod[b]
  if m then return m[1], m[2] end
  return counts(w.meta, b)
end

-- Until the oldest buckets leaving the window free `need` (slot 1: requests, 2: tokens).
local function retry(w, slot, need, now)
  local freed = 0
  for b = w.lo, math.floor(now / w.size) do
    local n, t = bucket(w, b)
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

-- Queues a field to write with save (one HSET for every change of the decision).
local function put(w, field, value)
  w.out[#w.out + 1] = field
  w.out[#w.out + 1] = value
end

-- Adds (requests, tokens) to the current bucket (written by save), and to the totals; true when the
-- bucket is new.
local function add(w, dn, dt)
  local new = w.cn == nil
  w.cn, w.ct = (w.cn or 0) + dn, math.max(0, (w.ct or 0) + dt)
  w.added = true
  w.n, w.t = w.n + dn, w.t + dt
  return new
end

-- What a process did not use of a block it was granted in bucket b goes back (window.give_back): the
-- bucket falls to what was really admitted in it; one left with no request is deleted, one that left the
-- window is gone already. Each bucket at most once per call (the caller merges them).
local function give_back(w, b, dn, dt)
  if b == w.cb then
    if not w.cn then return end
    local n, t = math.max(0, w.cn - dn), math.max(0, w.ct - dt)
    if n == 0 then t = 0 end
    w.n, w.t = w.n - (w.cn - n), w.t - (w.ct - t)
    w.cn, w.ct, w.added = n, t, true
    return
  end
  if b < w.lo or b > w.cb then return end
  local n, t = counts(w.meta, b)
  if not n then return end
  local n2, t2 = math.max(0, n - dn), math.max(0, t - dt)
  if n2 == 0 then t2 = 0 end
  w.n, w.t = w.n - (n - n2), w.t - (t - t2)
  if n2 > 0 then
    w.mod[b] = {n2, t2}
    put(w, 'b' .. fmt(b), fmt(n2) .. ':' .. fmt(t2))
    return
  end
  w.mod[b] = {}
  redis.call('HDEL', w.meta, 'b' .. fmt(b))
  if b == w.lo then  -- 'lo' names a bucket that exists
    while w.lo < w.cb and not bucket(w, w.lo) do w.lo = w.lo + 1 end
  end
end

-- Writes the current bucket (when added to; deleted when given back to nothing), the totals (when they
-- changed) and whatever was queued, in one HSET.
local function save(w)
  if w.added then
    if w.cn > 0 then
      put(w, 'b' .. fmt(w.cb), fmt(w.cn) .. ':' .. fmt(w.ct))
    else
      redis.call('HDEL', w.meta, 'b' .. fmt(w.cb))
    end
  end
  if w.n ~= w.was[1] or w.t ~= w.was[2] or w.lo ~= w.was[3] then
    put(w, 'n', fmt(w.n))
    put(w, 't', fmt(w.t))
    put(w, 'lo', fmt(w.lo))
  end
  if #w.out > 0 then redis.call('HSET', w.meta, unpack(w.out)) end
end
