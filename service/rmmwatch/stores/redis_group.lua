-- rmmwatch: one group's rolling window, episode and outbox, changed atomically.
--
-- The same state machine as service/rmmwatch/stores/engine.py (read its docstring), run
-- inside Redis so that replicas sharing a group serialize on it: "this event started an
-- episode" is decided once, and the alert goes to the group's outbox in the same step.
-- Every key is in the group's hash slot (Redis Cluster safe).
--
-- One call changes a batch of groups: ``process_group`` runs once per group, with that group's
-- seven keys and arguments (below); in standalone Redis all of a batch's groups (and the tick
-- schedule) go in one call, in Redis Cluster one call per group (each group is one slot).
--
-- Per group, KEYS: 1 ev (hash id -> record)  2 until (zset id by last active instant)
--       3 pend (zset id by first active instant, pending events only)  4 ep (hash: episode)
--       5 out (hash key -> alert spec)  6 unsent (zset key by creation)  7 meta (hash)
-- and ARGV: 1 now  2 mode ("apply" | "tick")  3 update policy ("none" | "every" | "throttle")
--       4 update interval  5 end alerts ("1" | "0")  6 orphan age  7 group (JSON)
--       8 now as a Timestamp string  9 number of events, then 5 per event: id, active_from,
--       active_until, pending, record
--
-- Instants are ticks relative to 2020-01-01 (exact in a Lua double until 2048); "-inf" and
-- "+inf" stand for unbounded. A record is: Timestamp (20 characters, ticks + 10^19, so
-- string order is time order), the instant rmmwatch saw it (20 characters), the
-- contribution JSON, "\31", the trigger JSON. Lua never decodes JSON: Timestamps exceed
-- 2^53 and would lose precision; it only compares the fixed-width strings and copies text.

local function process_group(KEYS, ARGV)
  local now_text = ARGV[1]
  local now = tonumber(now_text)
  local mode = ARGV[2]
  local policy = ARGV[3]
  local interval = tonumber(ARGV[4])
  local with_end = ARGV[5] == '1'
  local orphan_age = tonumber(ARGV[6])
  local group = ARGV[7]
  local now_stamp = ARGV[8]
  local count = tonumber(ARGV[9])

  local EV, UNTIL, PEND, EP, OUT, UNSENT, META = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
  local US = '\31'

  local function fmt(x) return string.format('%.0f', x) end

  -- An open episode means the group's meta exists: one call fewer in the steady state.
  local episode = redis.call('EXISTS', EP) == 1
  if group ~= '' and not episode then redis.call('HSETNX', META, 'group', group) end

  local function remove(command, key, ids)
    for i = 1, #ids, 500 do
      redis.call(command, key, unpack(ids, i, math.min(i + 499, #ids)))
    end
  end

  -- 1. advance to now: expire, activate
  local expired_ids = redis.call('ZRANGEBYSCORE', UNTIL, '-inf', '(' .. now_text)
  if #expired_ids > 0 then
    remove('HDEL', EV, expired_ids)
    remove('ZREM', PEND, expired_ids)
    redis.call('ZREMRANGEBYSCORE', UNTIL, '-inf', '(' .. now_text)
  end
  local activated_ids = redis.call('ZRANGEBYSCORE', PEND, '-inf', now_text)
  if #activated_ids > 0 then
    redis.call('ZREMRANGEBYSCORE', PEND, '-inf', now_text)
  end

  local function active_count()
    return redis.call('HLEN', EV) - redis.call('ZCARD', PEND)
  end

  -- The contributions of the active events, and the smallest Timestamp among them.
  local function active_snapshot()
    local all = redis.call('HGETALL', EV)
    local parts, earliest = {}, nil
    for i = 1, #all, 2 do
      if not redis.call('ZSCORE', PEND, all[i]) then
        local record = all[i + 1]
        local cut = string.find(record, US, 41, true)
        parts[#parts + 1] = string.sub(record, 41, cut - 1)
        local ticks = string.sub(record, 1, 20)
        if earliest == nil or ticks < earliest then earliest = ticks end
      end
    end
    return parts, earliest
  end

  local created = {}

  -- spec: kind, revision, episode start, created, event ticks, seen, group JSON, trigger JSON,
  -- contributions (each a JSON array, separated by "\30")
  local function alert(kind, revision, start, record, snapshot)
    local key = start .. ':' .. revision
    local event, seen, trigger = start, now_stamp, ''
    if record then
      event = string.sub(record, 1, 20)
      seen = string.sub(record, 21, 40)
      trigger = string.sub(record, string.find(record, US, 41, true) + 1)
    end
    local contributions = ''
    if kind ~= 'end' then
      local parts = snapshot or active_snapshot()
      contributions = table.concat(parts, '\30')
    end
    local group_json = redis.call('HGET', META, 'group') or '[]'
    local spec = table.concat({kind, revision, start, now_text, event, seen, group_json, trigger, contributions}, US)
    redis.call('HSET', OUT, key, spec)
    redis.call('ZADD', UNSENT, now_text, key)
    created[#created + 1] = key
    created[#created + 1] = spec
  end

  -- 2. a group that emptied ends its episode (before anything new can reopen it)
  if episode and #expired_ids > 0 and active_count() == 0 then
    local start, revision = unpack(redis.call('HMGET', EP, 'start', 'revision'))
    redis.call('DEL', EP)
    episode = false
    if with_end then alert('end', tonumber(revision) + 1, start, nil) end
  end

  -- 3. a change (activated or new events): a new episode, an update, or a throttled change
  local function changed(first, last)
    if not episode then
      local parts, earliest = active_snapshot()
      redis.call('HSET', EP, 'start', earliest, 'revision', 0, 'last_alert', now_text, 'dirty', 0)
      episode = true
      alert('new', 0, earliest, first, parts)
    elseif policy ~= 'none' then
      local last_alert = tonumber(redis.call('HGET', EP, 'last_alert'))
      if policy == 'every' or now - last_alert >= interval then
        local revision = redis.call('HINCRBY', EP, 'revision', 1)
        redis.call('HSET', EP, 'last_alert', now_text, 'dirty', 0)
        redis.call('HDEL', EP, 'dirty_record')
        alert('update', revision, redis.call('HGET', EP, 'start'), last)
      else
        redis.call('HSET', EP, 'dirty', 1, 'dirty_record', last)
      end
    end
  end

  -- Events whose time came are a change of their own, before this call's new events (as the
  -- engine's advance step is).
  local first_activated, last_activated = nil, nil
  for _, id in ipairs(activated_ids) do
    local record = redis.call('HGET', EV, id)
    if record then
      first_activated = first_activated or record
      last_activated = record
    end
  end
  if last_activated then changed(first_activated, last_activated) end

  -- 4. the new events (HSETNX: adding an event twice changes nothing)
  local inserted, duplicates, future = 0, 0, 0
  local first_change, last_change = nil, nil
  for i = 1, count do
    local base = 9 + (i - 1) * 5
    local id, from, till, pending, record = ARGV[base + 1], ARGV[base + 2], ARGV[base + 3], ARGV[base + 4], ARGV[base + 5]
    if redis.call('HSETNX', EV, id, record) == 1 then
      inserted = inserted + 1
      redis.call('ZADD', UNTIL, till, id)
      if pending == '1' then
        redis.call('ZADD', PEND, from, id)
        future = future + 1
      else
        first_change = first_change or record
        last_change = record
      end
    else
      duplicates = duplicates + 1
    end
  end
  if last_change then changed(first_change, last_change) end

  -- 5. on the tick, a throttled change whose interval has passed is alerted (trailing edge)
  if mode == 'tick' and redis.call('HGET', EP, 'dirty') == '1' then
    local last_alert = tonumber(redis.call('HGET', EP, 'last_alert'))
    if policy == 'none' or active_count() == 0 then
      redis.call('HSET', EP, 'dirty', 0)
      redis.call('HDEL', EP, 'dirty_record')
    elseif policy == 'every' or now - last_alert >= interval then
      local record = redis.call('HGET', EP, 'dirty_record')
      local revision = redis.call('HINCRBY', EP, 'revision', 1)
      redis.call('HSET', EP, 'last_alert', now_text, 'dirty', 0)
      redis.call('HDEL', EP, 'dirty_record')
      alert('update', revision, redis.call('HGET', EP, 'start'), record)
    end
  end

  -- The rest serves the tick: apply's callers schedule the group for the next tick instead.
  if mode ~= 'tick' then
    return {inserted, duplicates, future, #activated_ids, #expired_ids, '', 0, created, {}}
  end

  -- 6. alerts nobody delivered (their creator died): handed to whoever comes by after orphan_age
  local orphans = {}
  local stale = redis.call('ZRANGEBYSCORE', UNSENT, '-inf', fmt(now - orphan_age))
  for _, key in ipairs(stale) do
    local spec = redis.call('HGET', OUT, key)
    if spec then
      orphans[#orphans + 1] = key
      orphans[#orphans + 1] = spec
    end
  end

  -- 7. when this group next needs the tick: expiry, activation, throttle, undelivered alerts
  local due = nil
  local function sooner(x) if x and (due == nil or x < due) then due = x end end
  local first_until = redis.call('ZRANGE', UNTIL, 0, 0, 'WITHSCORES')
  if #first_until > 0 and first_until[2] ~= 'inf' then sooner(tonumber(first_until[2]) + 1) end
  local first_pending = redis.call('ZRANGE', PEND, 0, 0, 'WITHSCORES')
  if #first_pending > 0 then sooner(tonumber(first_pending[2])) end
  if redis.call('HGET', EP, 'dirty') == '1' then
    sooner(tonumber(redis.call('HGET', EP, 'last_alert')) + interval)
  end
  local first_unsent = redis.call('ZRANGE', UNSENT, 0, 0, 'WITHSCORES')
  if #first_unsent > 0 then sooner(tonumber(first_unsent[2]) + orphan_age) end
  if redis.call('HLEN', EV) == 0 and redis.call('EXISTS', EP) == 0 and #first_unsent == 0 then
    redis.call('DEL', META)
  end

  return {inserted, duplicates, future, #activated_ids, #expired_ids,
          due and fmt(due) or '', redis.call('HLEN', EV), created, orphans}
end


-- The batch. KEYS: 7 per group, then (if scheduling) the schedule's zset and epoch hash.
-- ARGV: 1 now  2 mode  3 orphan age  4 now as a Timestamp string  5 number of groups
-- 6 schedule ("1": lower each group's due time to now and move its epoch; standalone only),
-- then per group: update policy, interval, end alerts, group JSON, number of events, events.
local now, mode, orphan, now_stamp = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local groups = tonumber(ARGV[5])
local schedule = ARGV[6] == '1'
local results = {}
local at = 7
for g = 1, groups do
  local base = (g - 1) * 7
  local keys = {KEYS[base + 1], KEYS[base + 2], KEYS[base + 3], KEYS[base + 4], KEYS[base + 5], KEYS[base + 6],
                KEYS[base + 7]}
  local events = tonumber(ARGV[at + 4])
  local argv = {now, mode, ARGV[at], ARGV[at + 1], ARGV[at + 2], orphan, ARGV[at + 3], now_stamp, ARGV[at + 4]}
  for i = 1, events * 5 do argv[9 + i] = ARGV[at + 4 + i] end
  results[g] = process_group(keys, argv)
  at = at + 5 + events * 5
end
if schedule then
  local due, epochs = KEYS[groups * 7 + 1], KEYS[groups * 7 + 2]
  for g = 1, groups do
    local tag = string.sub(KEYS[(g - 1) * 7 + 1], 1, -4)
    redis.call('ZADD', due, 'LT', now, tag)
    redis.call('HINCRBY', epochs, tag, 1)
  end
end
return results
