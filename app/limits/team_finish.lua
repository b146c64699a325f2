-- A request ended: free its concurrency lease and turn its estimated tokens into the billed ones (cache
-- hits refunded). Mirrors window.finish. KEYS as team_admit.lua.
-- ARGV: 1 now ('' = Redis TIME), 2 deadline (0: none), 3 window us, 4 rid, 5 estimated tokens,
--       6 admitted at (us), 7 day of admission, 8 billed tokens.
-- Returns {requests, tokens, reset_us} in the window, or {-1} when stale.
local function fmt(x) return string.format('%.0f', x) end
local function weight(member) return tonumber(string.match(member, '|(%d+)$')) or 0 end

-- `now` and the stale check come from clock.lua, prepended by shared.script_source.
local window, rid, est = tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5])
local at, day, billed = ARGV[6], tonumber(ARGV[7]), tonumber(ARGV[8])
local log, meta, leases = KEYS[1], KEYS[2], KEYS[3]

local cutoff = fmt(now - window)
local tokens = tonumber(redis.call('HGET', meta, 'tokens') or '0')
local old = redis.call('ZRANGEBYSCORE', log, '-inf', cutoff)
for i = 1, #old do tokens = tokens - weight(old[i]) end
if #old > 0 then redis.call('ZREMRANGEBYSCORE', log, '-inf', cutoff) end
if redis.call('ZCARD', log) == 0 then tokens = 0 end
redis.call('ZREMRANGEBYSCORE', leases, '-inf', fmt(now))

redis.call('ZREM', leases, rid)
if redis.call('ZREM', log, rid .. '|' .. est) == 1 then
  redis.call('ZADD', log, at, rid .. '|' .. billed)
  tokens = tokens + billed - est
end
if redis.call('EXISTS', meta) == 1 then redis.call('HSET', meta, 'tokens', tokens) end
if tonumber(redis.call('HGET', meta, 'day') or '-1') == day then
  local used = tonumber(redis.call('HGET', meta, 'day_used') or '0')
  redis.call('HSET', meta, 'day_used', math.max(0, used + billed - est))
end
local count = redis.call('ZCARD', log)
local reset = 0
if count > 0 then reset = tonumber(redis.call('ZRANGE', log, 0, 0, 'WITHSCORES')[2]) + window - now end
return {count, tokens, reset}
