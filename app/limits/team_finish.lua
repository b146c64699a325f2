-- A request ended: free its concurrency lease and turn its estimated tokens into the billed ones (cache
-- hits refunded) in the bucket that counted it. Mirrors window.finish. KEYS as team_admit.lua.
-- ARGV: 1 now ('' = Redis TIME), 2 deadline (0: none), 3 window us, 4 rid, 5 estimated tokens,
--       6 admitted at (us), 7 day of admission, 8 billed tokens.
-- Returns {requests, tokens, reset_us} in the window, or {-1} when stale.
local window, rid, est = tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5])
local at, day, billed = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local meta, leases = KEYS[1], KEYS[2]

redis.call('ZREM', leases, rid)
local w = load_team(meta, now, window)
local b = math.floor(at / w.size)
local tokens = w.tokens
if w.n[b] then
  local fixed = math.max(0, w.tok[b] + billed - est)
  tokens = tokens + fixed - w.tok[b]
  w.tok[b] = fixed
  put(meta, w, b)
end
if w.day == day then redis.call('HSET', meta, 'day_used', math.max(0, w.day_used + billed - est)) end
return {w.count, tokens, reset_in(w, now)}
