-- Every request a new signed order, read from a file written before the run (bench/wrk.py):
-- one "signature<TAB>body" line per order. Each thread takes every n-th line, so no two requests of a
-- run carry the same order; the requests are built in init(), before wrk starts its clock.
-- wrk.args: the file, the number of threads, the path, then (pacing) the offered rate.
local requests_of_thread = {}
local index = 0
wrapped = 0

function init(args)
  local file, nthreads, path = args[1], tonumber(args[2]), args[3]
  local line_no = 0
  for line in io.lines(file) do
    if line_no % nthreads == id then
      local signature, body = line:match("^([^\t]+)\t(.*)$")
      table.insert(requests_of_thread, wrk.format("POST", path, {
        ["Content-Type"] = "application/json",
        ["X-Shopify-Topic"] = "orders/paid",
        ["X-Shopify-Hmac-Sha256"] = signature,
        ["X-Shopify-Shop-Domain"] = "bench.myshopify.com",
      }, body))
    end
    line_no = line_no + 1
  end
  if init_pacing then init_pacing(args, nthreads) end
end

function request()
  index = index + 1
  if index > #requests_of_thread then  -- ran out: the run repeats orders (reported, and refused)
    index = 1
    wrapped = wrapped + 1
  end
  return requests_of_thread[index]
end
