-- Open loop at a fixed offered rate with stock wrk (wrk2 is not in Debian): delay() is asked before
-- every request and claims the thread's next slot on a fixed schedule, so the rate does not depend on
-- how fast answers come back. wrk's timers have 1 ms resolution (a request may leave up to 1 ms early);
-- a request whose slot passed while every connection was busy goes at once and counts as "late"
-- (coordinated omission: its latency understates the wait a real client would have seen).
local ffi = require("ffi")
ffi.cdef [[
  struct ngw_timespec { long tv_sec; long tv_nsec; };
  int clock_gettime(int clock_id, struct ngw_timespec *tp);
]]
local now = ffi.new("struct ngw_timespec")
local interval_ms, next_ms
late = 0

local function monotonic_ms()
  ffi.C.clock_gettime(1, now)  -- CLOCK_MONOTONIC
  return tonumber(now.tv_sec) * 1000 + tonumber(now.tv_nsec) / 1e6
end

function init_pacing(args, nthreads)
  interval_ms = 1000 * nthreads / tonumber(args[4])
end

function delay()
  local t = monotonic_ms()
  next_ms = (next_ms or t) + interval_ms
  local wait = next_ms - t
  if wait < -1 then late = late + 1 end
  return wait > 0 and math.floor(wait) or 0
end
