"""The Lua scripts that make each Redis step atomic.

Every step that must not be torn in half by a crash -- take a message and
record it as unacked, put an unacked message back, restore expired leases,
publish against a known binding table -- runs as one script on the server.
Times come from the server's clock (``TIME``), so workers with skewed
clocks agree on visibility timeouts.

Records in the unacked hash are ``[list key, queue meta key, raw message]``
(JSON). A redelivered message is the raw JSON with ``"redelivered":true``
put first; the encoder never writes that field itself, so the mark wins.
"""
from __future__ import annotations

__all__ = ["DECLARE", "MUTATE", "PUBLISH", "PURGE", "RECORD", "REQUEUE", "RESTORE", "TAKE"]

_NOW = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
"""

_MARK = """
local function redelivered(raw)
  return '{"redelivered":true,' .. string.sub(raw, 2)
end
"""

#: KEYS: version, then (meta, list) per target queue.
#: ARGV: expected binding-table version ('' skips the check), raw message.
#: Returns how many queues took it, or -1 when the caller's table is stale.
PUBLISH = """
if ARGV[1] ~= '' then
  local version = redis.call('GET', KEYS[1]) or '0'
  if version ~= ARGV[1] then return -1 end
end
local taken = 0
for i = 2, #KEYS, 2 do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    redis.call('LPUSH', KEYS[i + 1], ARGV[2])
    taken = taken + 1
    local ttl = redis.call('PTTL', KEYS[i])
    if ttl > 0 then redis.call('PEXPIRE', KEYS[i + 1], ttl) end
  end
end
return taken
"""

#: KEYS: unacked hash, unacked index, then list keys in delivery order.
#: ARGV: how many to take, tag prefix, then the meta key of each list key.
#: Returns a flat list: list key, tag, raw message, ...
TAKE = _NOW + """
local want, out, taken = tonumber(ARGV[1]), {}, 0
for i = 3, #KEYS do
  while taken < want do
    local raw = redis.call('RPOP', KEYS[i])
    if not raw then break end
    taken = taken + 1
    local tag = ARGV[2] .. taken
    redis.call('HSET', KEYS[1], tag, cjson.encode({KEYS[i], ARGV[i], raw}))
    redis.call('ZADD', KEYS[2], now, tag)
    out[#out + 1] = KEYS[i]
    out[#out + 1] = tag
    out[#out + 1] = raw
  end
  if taken >= want then break end
end
return out
"""

#: Record one message a blocking pop took. KEYS: unacked, index.
#: ARGV: tag, list key, meta key, raw message.
RECORD = _NOW + """
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode({ARGV[2], ARGV[3], ARGV[4]}))
redis.call('ZADD', KEYS[2], now, ARGV[1])
return 1
"""

#: Put an unacked message back at the head of its queue (reject, recover,
#: channel close) -- unless its lease already expired and it was restored.
#: KEYS: unacked, index. ARGV: tag. Returns 1 when it went back.
REQUEUE = _MARK + """
local record = redis.call('HGET', KEYS[1], ARGV[1])
if not record then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
local r = cjson.decode(record)
if redis.call('EXISTS', r[2]) == 0 then return 0 end
redis.call('RPUSH', r[1], redelivered(r[3]))
return 1
"""

#: Restore leases older than the visibility timeout.
#: KEYS: unacked, index. ARGV: visibility timeout (s), most to restore.
#: Returns how many went back (messages of deleted queues are dropped).
RESTORE = _NOW + _MARK + """
local tags = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[1]),
                        'LIMIT', 0, tonumber(ARGV[2]))
local restored = 0
for _, tag in ipairs(tags) do
  local record = redis.call('HGET', KEYS[1], tag)
  if record then
    local r = cjson.decode(record)
    if redis.call('EXISTS', r[2]) == 1 then
      redis.call('RPUSH', r[1], redelivered(r[3]))
      restored = restored + 1
    end
  end
  redis.call('HDEL', KEYS[1], tag)
  redis.call('ZREM', KEYS[2], tag)
end
return {restored, #tags}
"""

#: Declare a queue. KEYS: meta, then its list keys. ARGV: arguments (JSON),
#: x-expires in ms ('0': never). A re-declare restarts the expiry clock.
DECLARE = """
redis.call('SET', KEYS[1], ARGV[1], 'NX')
local expires = tonumber(ARGV[2])
if expires > 0 then
  for i = 1, #KEYS do redis.call('PEXPIRE', KEYS[i], expires) end
end
return 1
"""

#: Count and drop every ready message. KEYS: the queue's list keys.
PURGE = """
local dropped = 0
for i = 1, #KEYS do
  dropped = dropped + redis.call('LLEN', KEYS[i])
  redis.call('DEL', KEYS[i])
end
return dropped
"""

#: Change the exchange/binding tables and bump their version if anything
#: changed, so every publisher's cached copy is refused until refreshed.
#: KEYS: version, table. ARGV: command (SADD, SREM, HSETNX, HDEL), arguments.
MUTATE = """
local changed = redis.call(ARGV[1], KEYS[2], unpack(ARGV, 2))
if changed > 0 then redis.call('INCR', KEYS[1]) end
return changed
"""
