"""Team limits and upstream quotas, shared by every replica through Redis (docs/limits.md).

window.py     the arithmetic of team limits and why (a sliding window counted in buckets)
pacing.py     the arithmetic of upstream quotas and why (GCRA with reservations)
*.lua         the same arithmetic as atomic Redis scripts on Redis's clock
local.py      in-process store (no Redis, or the fallback while Redis fails)
shared.py     Redis store
allowance.py  a block of a team's limits a process holds, admitting without a call
blocks.py     the blocks a process holds: prefetch, renewal, give-back
decider.py    LimitDecider: Redis while it answers, else the per-limit failure policy
admission.py  a team's admission and reconciliation around one request
headers.py    the rate-limit response headers of an admission
quota.py      the upstream gate the service awaits before every upstream call
desks.py      a team's management requests and transfers at once in this process (files, batches, tasks)
"""
