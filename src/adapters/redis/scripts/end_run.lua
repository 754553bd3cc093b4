-- End a non-terminal run without (another) attempt; a terminal run is left as it is.
-- Owned by run_log.rs.
--
-- KEYS[1] {p}:run:{firing}  KEYS[2] {p}:unfinished
-- ARGV[1] the terminal state  ARGV[2] the reason  ARGV[3] {p}
-- Returns {'missing'} or {'ok', the run hash (flat)}.
local rk = KEYS[1]
local h = redis.call('HMGET', rk, 'open', 'um', 'job', 'jm')
if not h[1] then
  return {'missing'}
end
if h[1] == '1' then
  redis.call('HSET', rk, 'state', ARGV[1], 'reason', ARGV[2], 'next', '', 'open', '0')
  redis.call('ZREM', KEYS[2], h[2])
  redis.call('ZADD', ARGV[3] .. ':done:' .. h[3], 0, h[4])
end
return {'ok', redis.call('HGETALL', rk)}
