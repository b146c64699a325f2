"""The process at run time: the gateway's state, the memory budget, OOM kills, the supervisor."""
