-- Prepended to every limit script (shared.script_source): the decision's time in us (ARGV[1], or Redis
-- TIME when empty: the tests inject a clock, replicas never use their own), and the stale check (ARGV[2]:
-- a caller that gave up before the script ran is never charged; returns {-1}).
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local deadline = tonumber(ARGV[2])
if deadline > 0 and now > deadline then return {-1} end
