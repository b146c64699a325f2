"""The vector cache: content keys, the VectorCache protocol, Redis, in-process and hot (LRU in front of
Redis) stores."""
