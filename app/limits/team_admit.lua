-- One team's admission decision: sliding-window log of requests (and their tokens), concurrency leases,
-- daily token budget; all limits checked and reserved at once. Mirrors window.admit (read it first).
-- KEYS: 1 log (zset: "rid|tokens" scored by admission time), 2 meta (hash: tokens, day, day_used),
--       3 leases (zset: rid scored by expiry). All share one hash tag (one Redis Cluster slot).
-- ARGV: 1 now in us ('' = Redis TIME; tests inject a clock), 2 deadline in Redis time (0: none; a caller
--       that has given up is never charged), 3 window us, 4 lease us, 5 rid, 6 estimated tokens,
--       7 rpm, 8 tpm, 9 concurrency, 10 daily tokens (0: not limited).
-- Returns {ok, reason, too_large, retry_us, requests, tokens, reset_us, now, day}, or {-1} when stale.
local function fmt(x) return string.format('%.0f', x) end
local function weight(member) return tonumber(string.match(member, '|(%d+)$')) or 0 end

-- `now` and the stale check come from clock.lua, prepended by shared.script_source.
local window, lease = tonumber(ARGV[3]), tonumber(ARGV[4])
local rid, est = ARGV[5], tonumber(ARGV[6])
local rpm, tpm, conc, daily = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
local log, meta, leases = KEYS[1], KEYS[2], KEYS[3]
local DAY = 86400000000

-- Drop what left the window; the running token sum follows (and heals to 0 with an empty log).
local cutoff = fmt(now - window)
local tokens = tonumber(redis.call('HGET', meta, 'tokens') or '0')
local old = redis.call('ZRANGEBYSCORE', log, '-inf', cutoff)
for i = 1, #old do tokens = tokens - weight(old[i]) end
if #old > 0 then redis.call('ZREMRANGEBYSCORE', log, '-inf', cutoff) end
local count = redis.call('ZCARD', log)
if count == 0 then tokens = 0 end
redis.call('ZREMRANGEBYSCORE', leases, '-inf', fmt(now))
local day = math.floor(now / DAY)
local used = 0
if daily > 0 then
  if tonumber(redis.call('HGET', meta, 'day') or '-1') == day then
    used = tonumber(redis.call('HGET', meta, 'day_used') or '0')
  else
    redis.call('HSET', meta, 'day', day, 'day_used', 0)
  end
end

local refused = {}
if rpm > 0 and count >= rpm then
  local e = redis.call('ZRANGE', log, count - rpm, count - rpm, 'WITHSCORES')
  refused[#refused + 1] = {'requests', 0, tonumber(e[2]) + window - now}
end
if tpm > 0 and tokens + est > tpm then
  if est > tpm then
    refused[#refused + 1] = {'tokens', 1, 0}
  else
    local need, freed, retry, start = tokens + est - tpm, 0, window, 0
    while freed < need do
      local page = redis.call('ZRANGE', log, start, start + 99, 'WITHSCORES')
      if #page == 0 then break end
      for i = 1, #page, 2 do
        freed = freed + weight(page[i])
        if freed >= need then retry = tonumber(page[i + 1]) + window - now break end
      end
      start = start + 100
    end
    refused[#refused + 1] = {'tokens', 0, retry}
  end
end
if conc > 0 and redis.call('ZCARD', leases) >= conc then
  refused[#refused + 1] = {'concurrency', 0, 1000000}
end
if daily > 0 and used + est > daily then
  refused[#refused + 1] = {'daily_tokens', (est > daily) and 1 or 0, (day + 1) * DAY - now}
end

local ok = (#refused == 0) and 1 or 0
if ok == 1 then
  if rpm > 0 or tpm > 0 then
    redis.call('ZADD', log, fmt(now), rid .. '|' .. est)
    redis.call('PEXPIRE', log, math.ceil(window / 1000) + 1000)
    count, tokens = count + 1, tokens + est
  end
  if conc > 0 then
    redis.call('ZADD', leases, fmt(now + lease), rid)
    redis.call('PEXPIRE', leases, math.ceil(lease / 1000) + 1000)
  end
  if daily > 0 then redis.call('HSET', meta, 'day_used', used + est) end
end
redis.call('HSET', meta, 'tokens', tokens)
local keep = math.ceil(window / 1000) + 60000
if daily > 0 then keep = math.max(keep, math.ceil(((day + 1) * DAY - now) / 1000) + 60000) end
redis.call('PEXPIRE', meta, keep)

local reset = 0
if count > 0 then reset = tonumber(redis.call('ZRANGE', log, 0, 0, 'WITHSCORES')[2]) + window - now end
if ok == 1 then return {1, '', 0, 0, count, tokens, reset, now, day} end
local reason, large, retry = refused[1][1], 0, 0
for i = 1, #refused do
  if refused[i][2] == 1 and large == 0 then reason, large = refused[i][1], 1 end
  retry = math.max(retry, refused[i][3])
end
if large == 1 then retry = 0 end
return {0, reason, large, retry, count, tokens, reset, now, day}
