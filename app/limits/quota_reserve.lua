-- The next slot of an upstream account's quota (GCRA with reservations; mirrors pacing.reserve).
-- KEYS: 1 the account's hash (next: earliest next call, paid: when the tokens so far are paid for).
-- ARGV: 1 now ('' = Redis TIME), 2 deadline (0: none), 3 us between calls, 4 us per token,
--       5 tokens of this call, 6 longest wait us.
-- Returns {1, wait_us, now} (sleep, then call), {0, retry_us, now} (queue full: nothing reserved),
-- or {-1} when stale.
local function fmt(x) return string.format('%.0f', x) end

-- `now` and the stale check come from clock.lua, prepended by shared.script_source.
local spacing, per_token = tonumber(ARGV[3]), tonumber(ARGV[4])
local tokens, max_wait = tonumber(ARGV[5]), tonumber(ARGV[6])
local key = KEYS[1]

local nxt = tonumber(redis.call('HGET', key, 'next') or '0')
local paid = tonumber(redis.call('HGET', key, 'paid') or '0')
local slot = math.max(now, nxt, paid)
local wait = slot - now
if wait > max_wait then return {0, wait - max_wait, now} end
nxt, paid = fmt(slot + spacing), fmt(slot + tokens * per_token)
redis.call('HSET', key, 'next', nxt, 'paid', paid)
redis.call('PEXPIRE', key, math.ceil((math.max(tonumber(nxt), tonumber(paid)) - now) / 1000) + 1000)
return {1, wait, now}
