-- Delete a job's runs, its run index and its cursor: what the embedded store's
-- delete_job does to runs, for mesh mode where the catalog lives elsewhere. Works a
-- bounded step at a time; the caller repeats while it answers 1. Owned by run_log.rs.
--
-- KEYS[1] {p}:runs:{job uid}  KEYS[2] {p}:unfinished  KEYS[3] {p}:cursors
-- KEYS[4] {p}:done:{job uid}
-- ARGV[1] {p}  ARGV[2] job uid  ARGV[3] runs per step
-- Returns 1 while runs remain, else 0 (and the cursor is gone).
local members = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[3]) - 1)
for _, m in ipairs(members) do
  local rk = ARGV[1] .. ':run:' .. string.sub(m, 17)
  local um = redis.call('HGET', rk, 'um')
  if um and um ~= '' then
    redis.call('ZREM', KEYS[2], um)
  end
  redis.call('DEL', rk)
  redis.call('ZREM', KEYS[1], m)
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 1
end
redis.call('HDEL', KEYS[3], ARGV[2])
redis.call('DEL', KEYS[4])
return 0
