-- Requests of one team ended (those of one event-loop turn of a process, in their order): free each one's
-- concurrency lease and turn its estimated tokens into the billed ones (cache hits refunded) in the bucket
-- that counted it, as that many finishes in a row would. Mirrors window.finish. KEYS as team_admit.lua.
-- ARGV: 1 now ('' = Redis TIME), 2 deadline (0: none), 3 window us, 4 count, then per request: rid,
--       estimated tokens, admitted at (us), day of admission, billed tokens.
-- Returns {requests, reset_us, now, tokens after each request's finish...} in the window, or {-1} when stale.
local window, count = tonumber(ARGV[3]), tonumber(ARGV[4])
local meta, leases = KEYS[1], KEYS[2]

local rids = {}
for i = 0, count - 1 do rids[i + 1] = ARGV[5 + i * 5] end
redis.call('ZREM', leases, unpack(rids))
local out = {0, 0, now}
if redis.call('EXISTS', meta) == 0 then
  for i = 1, count do out[3 + i] = 0 end
  return out
end
local w = load_team(meta, now, window)
local fixed, seen, day_used = {}, {}, w.day_used  -- buckets rewritten, in order
for i = 0, count - 1 do
  local est, at = tonumber(ARGV[6 + i * 5]), tonumber(ARGV[7 + i * 5])
  local day, billed = tonumber(ARGV[8 + i * 5]), tonumber(ARGV[9 + i * 5])
  local b = math.floor(at / w.size)
  if b >= w.lo then
    local n, t = bucket(w, b)
    if n then
      local t2 = math.max(0, t + billed - est)
      w.t = w.t + t2 - t
      if b == w.cb then w.ct = t2 else w.mod[b] = {n, t2} end
      if not seen[b] then fixed[#fixed + 1], seen[b] = b, true end
    end
  end
  if w.day == day then w.day_used = math.max(0, w.day_used + billed - est) end
  out[3 + i + 1] = w.t
end
for _, b in ipairs(fixed) do
  local n, t = bucket(w, b)
  put(w, 'b' .. fmt(b), fmt(n) .. ':' .. fmt(t))
end
if w.day_used ~= day_used then put(w, 'day_used', fmt(w.day_used)) end
save(w)
out[1], out[2] = w.n, reset_in(w, now)
return out
