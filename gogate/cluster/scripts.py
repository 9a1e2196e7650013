"""The Lua scripts a host runs in Redis (:mod:`.relay`, :mod:`.streams_redis`): each does in
one command, inside Redis, what would otherwise take a round trip per user or per host.

Keys, by user id ``<u>`` and host id ``<h>``:

| key | type | holds |
|---|---|---|
| ``gogate:alive:<h>`` | string | present while host ``<h>`` runs (30 s expiry, refreshed) |
| ``gogate:user:<u>`` | hash | host id → that host's connections of the user |
| ``gogate:sm:<u>`` | hash | the user's stream: ``e`` epoch, ``s`` latest offset |
| ``gogate:sl:<u>`` | list | ids of the stream's kept events, oldest first (latest offset last) |
| ``gogate:ev:<id>`` | string | one kept event, stored once for all its receivers, expiring after |
|  |  | ``RECOVERY_TTL`` |
| ``gogate:evseq`` | counter | event ids |

A stream's keys expire ``RECOVERY_TTL`` after its user's last connection anywhere closes; while
a host holds a connection of the user it keeps them alive (``lease``: a longer expiry, renewed
every 10 s), so the streams of a host that dies go too.

Messages published to a host's channel ``gogate:host:<h>``: a msgpack envelope (an event routed
without offsets, an invalidation, a revocation); ``S`` + 4-byte length + msgpack head
``[origin, event, user ids, offsets, resets, [worker, ticket]]`` + the event (a numbered stream
event; ``resets``: the ``[user id, epoch]`` whose stream it started anew; worker and ticket:
who published it on the origin host, which waits for its own copy); ``R`` + msgpack
``[[user id, epoch, offset], ...]`` (replaced streams).
"""

from __future__ import annotations

from typing import Final

__all__ = ["ACQUIRE", "APPEND", "FLUSH", "LATE", "ONLINE", "REFRESH", "RELEASE", "REPLAY",
           "RESET", "ROUTE"]

LATE: Final = "gogate:late"

# KEYS: user hashes; ARGV: origin host, message. Publishes once per live target host.
ROUTE: Final = """
local hosts = {}
for _, key in ipairs(KEYS) do
  local fields = redis.call('HKEYS', key)
  for _, host in ipairs(fields) do hosts[host] = true end
end
local sent = 0
for host, _ in pairs(hosts) do
  if host ~= ARGV[1] and redis.call('EXISTS', 'gogate:alive:' .. host) == 1 then
    redis.call('PUBLISH', 'gogate:host:' .. host, ARGV[2])
    sent = sent + 1
  end
end
return sent
"""

# KEYS: user hashes; ARGV: origin host, message, now (seconds), size. Routes like ROUTE an
# event kept during an outage, and also keeps it in the list gogate:late with the hosts it
# reached: a host that comes back later delivers from there what it was owed. Each entry is a
# 4-byte length, msgpack [now, hosts reached], then the message.
FLUSH: Final = """
local hosts, reached = {}, {}
for _, key in ipairs(KEYS) do
  for _, host in ipairs(redis.call('HKEYS', key)) do hosts[host] = true end
end
for host, _ in pairs(hosts) do
  if host ~= ARGV[1] and redis.call('EXISTS', 'gogate:alive:' .. host) == 1 then
    redis.call('PUBLISH', 'gogate:host:' .. host, ARGV[2])
    reached[#reached + 1] = host
  end
end
local head = cmsgpack.pack({tonumber(ARGV[3]), reached})
redis.call('RPUSH', 'gogate:late', struct.pack('>I4', #head) .. head .. ARGV[2])
redis.call('LTRIM', 'gogate:late', -tonumber(ARGV[4]), -1)
redis.call('EXPIRE', 'gogate:late', 120)
return #reached
"""

# KEYS: user hashes. Returns 1/0 per key: does a live host hold the user?
ONLINE: Final = """
local result = {}
for i, key in ipairs(KEYS) do
  result[i] = 0
  for _, host in ipairs(redis.call('HKEYS', key)) do
    if redis.call('EXISTS', 'gogate:alive:' .. host) == 1 then result[i] = 1 break end
  end
end
return result
"""

# The kept events of stream <uid> after <offset> in <epoch>, or nil when they cannot all be
# given: another epoch, an offset above the latest, more than <size> of them (a list holds a
# few more, trimmed in steps), or one of them expired.
_SINCE = """
local function since(uid, epoch, offset, size)
  local meta = redis.call('HMGET', 'gogate:sm:' .. uid, 'e', 's')
  if not meta[1] or meta[1] ~= epoch then return nil end
  local missed = tonumber(meta[2]) - offset
  if offset < 0 or missed < 0 or missed > size then return nil end
  local payloads = {}
  if missed == 0 then return payloads end
  local ids = redis.call('LRANGE', 'gogate:sl:' .. uid, -missed, -1)
  if #ids < missed then return nil end
  for first = 1, missed, 500 do
    local keys = {}
    for i = first, math.min(first + 499, missed) do keys[#keys + 1] = 'gogate:ev:' .. ids[i] end
    local got = redis.call('MGET', unpack(keys))
    for i = 1, #keys do
      if not got[i] then return nil end
      payloads[#payloads + 1] = got[i]
    end
  end
  return payloads
end
"""

# ARGV: host, user, limit, streams (1/0), epoch of a stream made anew, lease, since epoch
# ('' = none), since offset, size. Counts one more connection unless at the limit ({0}); then opens
# the user's stream: {1, epoch, latest offset, recovered (-1 not asked, 0, 1), events...}.
# A stream missing while the user holds connections was lost: they are told the new one.
ACQUIRE: Final = _SINCE + """
local uid = ARGV[2]
local key = 'gogate:user:' .. uid
local total = 0
local holders = {}
local fields = redis.call('HGETALL', key)
for i = 1, #fields, 2 do
  if redis.call('EXISTS', 'gogate:alive:' .. fields[i]) == 1 then
    total = total + tonumber(fields[i + 1])
    holders[#holders + 1] = fields[i]
  else
    redis.call('HDEL', key, fields[i])
  end
end
local limit = tonumber(ARGV[3])
if limit > 0 and total >= limit then return {0} end
redis.call('HINCRBY', key, ARGV[1], 1)
if ARGV[4] ~= '1' then return {1} end
local meta = 'gogate:sm:' .. uid
local position = redis.call('HMGET', meta, 'e', 's')
local epoch, latest = position[1], tonumber(position[2])
if not epoch then
  epoch, latest = ARGV[5], 0
  redis.call('HSET', meta, 'e', epoch, 's', 0)
  redis.call('DEL', 'gogate:sl:' .. uid)
  if total > 0 then
    local message = 'R' .. cmsgpack.pack({{tonumber(uid), epoch, 0}})
    for _, host in ipairs(holders) do redis.call('PUBLISH', 'gogate:host:' .. host, message) end
  end
end
redis.call('EXPIRE', meta, ARGV[6])
redis.call('EXPIRE', 'gogate:sl:' .. uid, ARGV[6])
local result = {1, epoch, latest, -1}
if ARGV[7] ~= '' then
  local events = since(uid, ARGV[7], tonumber(ARGV[8]), tonumber(ARGV[9]))
  if events == nil then
    result[4] = 0
  else
    result[4] = 1
    for _, payload in ipairs(events) do result[#result + 1] = payload end
  end
end
return result
"""

# ARGV: user, epoch, offset, size. {1, events...} or {0}.
REPLAY: Final = _SINCE + """
local events = since(ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]))
if events == nil then return {0} end
local result = {1}
for _, payload in ipairs(events) do result[#result + 1] = payload end
return result
"""

# ARGV: host, streams (1/0), ttl, then (user, connections) pairs. Counts those connections
# less; a stream whose user holds none anywhere now expires after ttl.
RELEASE: Final = """
for i = 4, #ARGV, 2 do
  local uid = ARGV[i]
  local key = 'gogate:user:' .. uid
  local left = redis.call('HINCRBY', key, ARGV[1], -tonumber(ARGV[i + 1]))
  if left <= 0 then redis.call('HDEL', key, ARGV[1]) end
  if ARGV[2] == '1' then
    local total = 0
    local fields = redis.call('HGETALL', key)
    for j = 1, #fields, 2 do
      if redis.call('EXISTS', 'gogate:alive:' .. fields[j]) == 1 then
        total = total + tonumber(fields[j + 1])
      end
    end
    if total <= 0 then
      redis.call('EXPIRE', 'gogate:sm:' .. uid, ARGV[3])
      redis.call('EXPIRE', 'gogate:sl:' .. uid, ARGV[3])
    end
  end
end
return 0
"""

# ARGV: lease, users. The streams of users this host holds live on.
REFRESH: Final = """
for i = 2, #ARGV do
  redis.call('EXPIRE', 'gogate:sm:' .. ARGV[i], ARGV[1])
  redis.call('EXPIRE', 'gogate:sl:' .. ARGV[i], ARGV[1])
end
return 0
"""

# Lua: the hosts holding user ``uid`` that are alive, each host's liveness looked up once per
# call (``alive`` is shared across the users of one call).
_LIVE_HOSTS: Final = """
local function live_hosts(uid, alive)
  local hosts = {}
  for _, host in ipairs(redis.call('HKEYS', 'gogate:user:' .. uid)) do
    local live = alive[host]
    if live == nil then
      live = redis.call('EXISTS', 'gogate:alive:' .. host) == 1
      alive[host] = live
    end
    if live then hosts[#hosts + 1] = host end
  end
  return hosts
end
"""

# ARGV: origin, epoch of the new streams, lease, ttl, size, event, payload, publishing worker,
# its ticket, users. Numbers one stream event: for each user with a stream, the next offset
# and a reference to the event, which is stored once; a user online without a stream (Redis
# lost it) gets a new one. Then publishes the event with every offset, once to each live host
# holding a receiver and to the origin (which delivers it even when Redis lost who holds
# whom), so every host delivers stream events in this order.
APPEND: Final = _LIVE_HOSTS + """
local lease, ttl, size = ARGV[3], ARGV[4], tonumber(ARGV[5])
local alive, targets = {}, {[ARGV[1]] = true}
local users, offsets, resets = {}, {}, {}
local id = nil
for i = 10, #ARGV do
  local uid = ARGV[i]
  local online = false
  for _, host in ipairs(live_hosts(uid, alive)) do
    online = true
    targets[host] = true
  end
  local meta = 'gogate:sm:' .. uid
  local list = 'gogate:sl:' .. uid
  local offset = 0
  if online then  -- an online user has a stream, unless Redis lost it
    offset = redis.call('HINCRBY', meta, 's', 1)
    if offset == 1 and redis.call('HEXISTS', meta, 'e') == 0 then
      redis.call('HSET', meta, 'e', ARGV[2])
      redis.call('EXPIRE', meta, lease)
      redis.call('DEL', list)
      resets[#resets + 1] = {tonumber(uid), ARGV[2]}
    end
  elseif redis.call('EXISTS', meta) == 1 then
    offset = redis.call('HINCRBY', meta, 's', 1)
  end
  if offset > 0 then
    if id == nil then id = redis.call('INCR', 'gogate:evseq') end
    local length = redis.call('RPUSH', list, id)
    if length == 1 then
      local left = redis.call('PTTL', meta)
      if left > 0 then redis.call('PEXPIRE', list, left) end
    elseif length > size + 64 then  -- trimmed in steps: one LTRIM per 64 events
      redis.call('LTRIM', list, -size, -1)
    end
  end
  users[#users + 1] = tonumber(uid)
  offsets[#offsets + 1] = offset
end
if id ~= nil then redis.call('SET', 'gogate:ev:' .. id, ARGV[7], 'EX', ttl) end
local message = nil
for host, _ in pairs(targets) do
  if message == nil then
    local head = cmsgpack.pack({ARGV[1], ARGV[6], users, offsets, resets,
                                {tonumber(ARGV[8]), tonumber(ARGV[9])}})
    message = 'S' .. struct.pack('>I4', #head) .. head .. ARGV[7]
  end
  redis.call('PUBLISH', 'gogate:host:' .. host, message)
end
return id or 0
"""

# ARGV: epoch of the new streams, lease, users. Every user's stream (if it has one, or is
# online) starts anew in that epoch at offset 0; each live host holding the user is told.
RESET: Final = _LIVE_HOSTS + """
local alive, messages = {}, {}
for i = 3, #ARGV do
  local uid = ARGV[i]
  local hosts = live_hosts(uid, alive)
  local meta = 'gogate:sm:' .. uid
  if #hosts > 0 or redis.call('EXISTS', meta) == 1 then
    redis.call('HSET', meta, 'e', ARGV[1], 's', 0)
    redis.call('DEL', 'gogate:sl:' .. uid)
    if #hosts > 0 then redis.call('EXPIRE', meta, ARGV[2]) end
    for _, host in ipairs(hosts) do
      local list = messages[host]
      if list == nil then
        list = {}
        messages[host] = list
      end
      list[#list + 1] = {tonumber(uid), ARGV[1], 0}
    end
  end
end
for host, list in pairs(messages) do
  redis.call('PUBLISH', 'gogate:host:' .. host, 'R' .. cmsgpack.pack(list))
end
return 0
"""
