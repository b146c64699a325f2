-- A request ended: free its concurrency lease and turn its estimated tokens into the billed ones (cache
-- hits refunded) in the bucket that counted it. Mirrors window.finish. KEYS as team_admit.lua.
-- ARGV: 1 now ('' = Redis TIME), 2 deadline (0: none), 3 window us, 4 rid, 5 estimated tokens,
--       6 admitted at (us), 7 day of admission, 8 billed tokens.
-- Returns {requests, tokens, reset_us} in the window and Redis's now, or {-1} when stale.
local window, rid, est = tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5])
local at, day, billed = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local meta, leases = KEYS[1], KEYS[2]

redis.call('ZREM', leases, rid)
if redis.call('EXISTS', meta) == 0 then return {0, 0, 0, now} end
local w = load_team(meta, now, window)
local b = math.floor(at / w.size)
if b >= w.lo then
  local n, t = counts(meta, b)
  if n then
    local fixed = math.max(0, t + billed - est)
    w.t = w.t + fixed - t
    put(w, 'b' .. fmt(b), fmt(n) .. ':' .. fmt(fixed))
  end
end
if w.day == day then put(w, 'day_used', fmt(math.max(0, w.day_used + billed - est))) end
save(w)
return {w.n, w.t, reset_in(w, now), now}
