-- Mark a batch of attempts started: exactly one start per (firing, attempt number),
-- also within the batch, since starts apply in order. Owned by run_log.rs; must not
-- look at the catalog (paused or deleted jobs are the caller's check in mesh mode).
--
-- ARGV[1] {p}  ARGV[2] starts, then per start: firing, epoch (epoch20), attempt number,
-- started_at (JSON instant), the attempt as started (JSON).
-- Returns one string per start: 'ok', 'deleted', 'fenced', 'started', or
-- 'terminal:{state}'.
local base = ARGV[1]
local out = {}
local i = 3
for _ = 1, tonumber(ARGV[2]) do
  local firing, epoch, number, started, attempt = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  i = i + 5
  local rk = base .. ':run:' .. firing
  local h = redis.call('HMGET', rk, 'open', 'epoch', 'latest', 'state')
  if not h[1] then
    out[#out + 1] = 'deleted'
  elseif epoch < h[2] then
    out[#out + 1] = 'fenced'
  elseif h[1] ~= '1' then
    out[#out + 1] = 'terminal:' .. h[4]
  elseif tonumber(h[3]) >= tonumber(number) then
    out[#out + 1] = 'started'
  else
    redis.call('HSET', rk, 'state', 'running', 'epoch', epoch, 'next', '', 'updated', started,
      'latest', number, 'a:' .. number, attempt)
    out[#out + 1] = 'ok'
  end
end
return out
