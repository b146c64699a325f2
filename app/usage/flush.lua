-- One process's batch of ledger increments, applied at most once, then the spend of its budgeted teams.
-- KEYS: 1 the process's last applied batch number; 2.. the ledger's hashes this batch touches or reads (hour,
--       minute, day and month hashes; one hash tag, so one Redis Cluster slot).
-- ARGV: 1 batch number (grows by one per batch of the process), 2 K = #KEYS - 1, 3..2+K each hash's expiry
--       (unix seconds, the same for every writer of it), then N, then N triples (key index into KEYS, field,
--       increment), then pairs (key index, field) to read back.
-- A batch sent again (its reply was lost, so the process could not know it landed) finds its number
-- applied and changes nothing: nothing is counted twice. Returns {applied (1) or skipped (0), values read}.
local seq, k = tonumber(ARGV[1]), tonumber(ARGV[2])
local done = tonumber(redis.call('GET', KEYS[1]) or '0')
local n = tonumber(ARGV[3 + k])
local first = 4 + k
local fresh = seq > done
if fresh then
  for j = 0, n - 1 do
    local at = first + 3 * j
    redis.call('HINCRBY', KEYS[tonumber(ARGV[at])], ARGV[at + 1], ARGV[at + 2])
  end
  for j = 1, k do
    if redis.call('EXISTS', KEYS[j + 1]) == 1 then redis.call('EXPIREAT', KEYS[j + 1], ARGV[2 + j]) end
  end
  redis.call('SET', KEYS[1], seq, 'EX', 7 * 86400)
end
local out = {}
for i = first + 3 * n, #ARGV, 2 do
  out[#out + 1] = tonumber(redis.call('HGET', KEYS[tonumber(ARGV[i])], ARGV[i + 1]) or '0')
end
return {fresh and 1 or 0, out}
