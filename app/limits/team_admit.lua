-- One team's admission decisions, for the requests of one event-loop turn of a process, in their order: each
-- decided as if alone, after the ones before it (window.admit, once per request, at one `now`; read it
-- first). Requests and tokens counted per bucket (a 1/60 slice of the window, so the state is at most 60
-- counters whatever the rate), concurrency leases, daily token budget; all limits checked and reserved at
-- once. The team's state is read once and written once whatever the number of requests.
-- Around them, for teams with only rpm/tpm: first what the process did not use of its past blocks goes
-- back (window.give_back), last a new block is granted in the current bucket (window.grant).
-- KEYS: 1 meta (hash: buckets, day, day_used), 2 leases (zset: rid scored by expiry). Both share one
--       hash tag (one Redis Cluster slot).
-- ARGV: 1 now in us ('' = Redis TIME; tests inject a clock), 2 deadline in Redis time (0: none; a caller
--       that has given up is never charged), 3 window us, 4 lease us, 5 rpm, 6 tpm, 7 concurrency,
--       8 daily tokens (0: not limited), 9 block requests wanted (0: none), 10 block tokens wanted,
--       11 live processes, 12 number of blocks given back, then per block: bucket, requests, tokens,
--       then per request: rid, estimated tokens.
-- Returns {now, day, block bucket, block requests, block tokens, requests, tokens, reset_us (the window's
-- after all of it), per request {ok, reason, too_large, retry_us, requests, tokens, reset_us,
-- requests_retry_us}} (the last: until the requests limit alone would admit again, 0 when it did not
-- refuse), or {-1} when stale.

-- `now` and the stale check come from clock.lua, the buckets' helpers from buckets.lua (both prepended).
local window, lease = tonumber(ARGV[3]), tonumber(ARGV[4])
local rpm, tpm, conc, daily = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local want_n, want_t, procs, backs = tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11]), tonumber(ARGV[12])
local first = 13 + 3 * backs
local meta, leases = KEYS[1], KEYS[2]
local DAY = 86400000000

local w = load_team(meta, now, window)
for i = 13, first - 1, 3 do give_back(w, tonumber(ARGV[i]), tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])) end
local held = 0
if conc > 0 then
  redis.call('ZREMRANGEBYSCORE', leases, '-inf', fmt(now))
  held = redis.call('ZCARD', leases)
end
local day = math.floor(now / DAY)
local used, new_day = 0, false
if daily > 0 then
  if w.day == day then used = w.day_used else new_day = true end
end

local out = {now, day, w.cb, 0, 0, 0, 0, 0}
local new_bucket, spent, taken = false, false, {}
for i = first, #ARGV, 2 do
  local rid, est = ARGV[i], tonumber(ARGV[i + 1])
  local count, tokens = w.n, w.t
  local refused = {}
  if rpm > 0 and count >= rpm then
    refused[#refused + 1] = {'requests', 0, retry(w, 1, count - rpm + 1, now)}
  end
  if tpm > 0 and tokens + est > tpm then
    if est > tpm then
      refused[#refused + 1] = {'tokens', 1, 0}
    else
      refused[#refused + 1] = {'tokens', 0, retry(w, 2, tokens + est - tpm, now)}
    end
  end
  if conc > 0 and held >= conc then
    refused[#refused + 1] = {'concurrency', 0, 1000000}
  end
  if daily > 0 and used + est > daily then
    refused[#refused + 1] = {'daily_tokens', (est > daily) and 1 or 0, (day + 1) * DAY - now}
  end

  if #refused == 0 then
    if rpm > 0 or tpm > 0 then
      if add(w, 1, est) then new_bucket = true end
      count, tokens = w.n, w.t
    end
    if conc > 0 then
      taken[#taken + 1] = fmt(now + lease)
      taken[#taken + 1] = rid
      held = held + 1
    end
    if daily > 0 then used, spent = used + est, true end
    out[#out + 1] = {1, '', 0, 0, count, tokens, reset_in(w, now), 0}
  else
    local reason, large, wait, rpm_wait = refused[1][1], 0, 0, 0
    if reason == 'requests' then rpm_wait = refused[1][3] end
    for j = 1, #refused do
      if refused[j][2] == 1 and large == 0 then reason, large = refused[j][1], 1 end
      wait = math.max(wait, refused[j][3])
    end
    if large == 1 then wait = 0 end
    out[#out + 1] = {0, reason, large, wait, count, tokens, reset_in(w, now), rpm_wait}
  end
end

if want_n >= 2 and conc == 0 and daily == 0 then
  local n, t = want_n, want_t
  if rpm > 0 then n = math.min(n, math.floor((rpm - w.n) / (2 * procs))) end
  if tpm > 0 then
    if w.t > tpm then n = 0 end
    t = math.min(t, math.floor((tpm - w.t) / (2 * procs)))
  end
  if n >= 2 then
    t = math.max(0, t)
    if add(w, n, t) then new_bucket = true end
    out[4], out[5] = n, t
  end
end
out[6], out[7], out[8] = w.n, w.t, reset_in(w, now)

if #taken > 0 then
  redis.call('ZADD', leases, unpack(taken))
  redis.call('PEXPIRE', leases, math.ceil(lease / 1000) + 1000)
end
if new_day or spent then
  put(w, 'day', day)
  put(w, 'day_used', fmt(used))
end
save(w)
-- The hash must outlive its newest bucket by a window (and the day's tokens their day): set when the key
-- is new, a bucket or a day begins (later writes of the same bucket or day are covered by that expiry).
if w.fresh or new_bucket or new_day then
  local keep = math.ceil((window + w.size) / 1000) + 1000
  if daily > 0 then keep = math.max(keep, math.ceil(((day + 1) * DAY - now) / 1000) + 60000) end
  redis.call('PEXPIRE', meta, keep)
end
return out
