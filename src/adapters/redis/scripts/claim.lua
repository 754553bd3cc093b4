-- Claim a batch of runs, fenced by epoch, and advance the jobs' progress cursors.
-- Owned by run_log.rs (which documents the run hash); must not decide schedules.
--
-- KEYS[1] {p}:epoch:{shard} (the fence)   KEYS[2] {p}:cursors   KEYS[3] {p}:unfinished
-- ARGV[1] {p}  ARGV[2] claim epoch (epoch20)  ARGV[3] runs kept per job  ARGV[4] claims
-- then per claim: firing, job uid, job-index member, unfinished member ('' when the
-- run is terminal), cursor (instant20, '' for none), n, then n field/value pairs.
-- Returns {'fenced', current epoch20}, or {'ok', 1|0 per claim} (1: new run).
local current = redis.call('GET', KEYS[1])
if current and ARGV[2] < current then
  return {'fenced', current}
end
if not current or ARGV[2] > current then
  redis.call('SET', KEYS[1], ARGV[2])
end

local base = ARGV[1]
local keep = tonumber(ARGV[3])

-- Delete the oldest terminal runs of a job while it has more than `keep` runs. Runs
-- not yet terminal are never deleted (they are still owed an outcome), so only the
-- job's terminal index `dk` is looked at: no scan over open runs.
local function retain(jk, dk)
  local count = redis.call('ZCARD', jk)
  while count > keep do
    local oldest = redis.call('ZRANGE', dk, 0, 0)
    if #oldest == 0 then
      return
    end
    local m = oldest[1]
    redis.call('DEL', base .. ':run:' .. string.sub(m, 17))
    redis.call('ZREM', jk, m)
    redis.call('ZREM', dk, m)
    count = count - 1
  end
end

local out = {'ok'}
local i = 5
for _ = 1, tonumber(ARGV[4]) do
  local firing, uid, jm, um, cursor = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local nf = tonumber(ARGV[i + 5])
  local first = i + 6
  i = first + 2 * nf
  if cursor ~= '' then
    local prev = redis.call('HGET', KEYS[2], uid)
    if not prev or prev < cursor then
      redis.call('HSET', KEYS[2], uid, cursor)
    end
  end
  local rk = base .. ':run:' .. firing
  if redis.call('EXISTS', rk) == 1 then
    out[#out + 1] = 0
  else
    redis.call('HSET', rk, unpack(ARGV, first, i - 1))
    local jk = base .. ':runs:' .. uid
    local dk = base .. ':done:' .. uid
    redis.call('ZADD', jk, 0, jm)
    if um ~= '' then
      redis.call('ZADD', KEYS[3], 0, um)
    else
      redis.call('ZADD', dk, 0, jm)
    end
    retain(jk, dk)
    out[#out + 1] = 1
  end
end
return out
