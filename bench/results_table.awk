# results_table.awk: turns bench JSON lines (bench/harness.hpp) into two
# markdown tables, measurements then ratios (unit "x"), in input order.

# field(line, key): the value of "key":... in a JSON line, unquoted.
function field(line, key,   s) {
  if (!match(line, "\"" key "\":(\"[^\"]*\"|[^,}]*)")) return ""
  s = substr(line, RSTART + length(key) + 3, RLENGTH - length(key) - 3)
  gsub(/"/, "", s)
  return s
}

/^\{/ {
  row = "| " field($0, "bench") " | " field($0, "system") " | " field($0, "metric") " | " \
        field($0, "value") " | " field($0, "unit") " |"
  if (field($0, "unit") == "x") ratios[nr++] = row; else values[nv++] = row
}

END {
  print ""
  print "## Measurements"
  print ""
  print "| bench | system | metric | median | unit |"
  print "|---|---|---|---:|---|"
  for (i = 0; i < nv; i++) print values[i]
  print ""
  print "## Ratios"
  print ""
  print "| bench | system | metric | median | unit |"
  print "|---|---|---|---:|---|"
  for (i = 0; i < nr; i++) print ratios[i]
}
