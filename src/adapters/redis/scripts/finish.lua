-- Record attempt ends, in order. The first end recorded for an attempt stands; only
-- the run's latest attempt sets the run's state; a terminal run keeps its state.
-- Owned by run_log.rs.
--
-- KEYS[1] {p}:unfinished
-- ARGV[1] {p}  ARGV[2] '1' to answer with each run  ARGV[3] ends, then per end:
-- firing, attempt number, the end (JSON), next state, '1' if the next state is not
-- terminal (else '0'), next attempt instant (JSON) or '', '1' to set the reason,
-- the reason, finished_at (JSON instant).
-- Returns one answer per end: {'missing'}, {'no_attempt'}, or {'ok'[, run hash]}.
local out = {}
local i = 4
for _ = 1, tonumber(ARGV[3]) do
  local rk = ARGV[1] .. ':run:' .. ARGV[i]
  local n = ARGV[i + 1]
  local answer
  if redis.call('EXISTS', rk) == 0 then
    answer = {'missing'}
  elseif redis.call('HEXISTS', rk, 'a:' .. n) == 0 then
    answer = {'no_attempt'}
  else
    if redis.call('HSETNX', rk, 'e:' .. n, ARGV[i + 2]) == 1 then
      local h = redis.call('HMGET', rk, 'open', 'latest', 'um', 'job', 'jm')
      if h[1] == '1' and tonumber(h[2]) == tonumber(n) then
        redis.call('HSET', rk, 'state', ARGV[i + 3], 'next', ARGV[i + 5], 'updated', ARGV[i + 8])
        if ARGV[i + 6] == '1' then
          redis.call('HSET', rk, 'reason', ARGV[i + 7])
        end
        if ARGV[i + 4] == '0' then
          redis.call('HSET', rk, 'open', '0')
          redis.call('ZREM', KEYS[1], h[3])
          redis.call('ZADD', ARGV[1] .. ':done:' .. h[4], 0, h[5])
        end
      end
    end
    answer = {'ok'}
    if ARGV[2] == '1' then
      answer[2] = redis.call('HGETALL', rk)
    end
  end
  out[#out + 1] = answer
  i = i + 9
end
return out
