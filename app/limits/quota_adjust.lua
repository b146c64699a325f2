-- Correct an upstream account's token bill by what the upstream reported (mirrors pacing.adjust).
-- KEYS: 1 the account's hash. ARGV: 1 now ('' = Redis TIME), 2 deadline (0: none), 3 us per token,
-- 4 billed minus estimated tokens (negative: a refund). Returns {1}, or {-1} when stale.
-- `now` and the stale check come from clock.lua, prepended by shared.script_source.
local per_token, delta = tonumber(ARGV[3]), tonumber(ARGV[4])
local paid = tonumber(redis.call('HGET', KEYS[1], 'paid') or '0')
if per_token > 0 and delta ~= 0 and paid > 0 then
  redis.call('HSET', KEYS[1], 'paid', string.format('%.0f', paid + delta * per_token))
end
return {1}
