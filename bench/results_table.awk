# results_table.awk: turns bench JSON lines (bench/harness.hpp) into
# markdown tables, in input order.
#
# Metrics named <base>_c<C> or <base>_c<C>_b<S> (a value per connection
# count C and message size S: echo, http) go to pivot tables, one row per
# (C, S): measurements one table per (bench, base) with a column per system,
# ratios (unit "x") one table per (bench, system) with a column per base.
# Every other line goes to two plain tables, measurements then ratios.

# field(line, key): the value of "key":... in a JSON line, unquoted.
function field(line, key,   s) {
  if (!match(line, "\"" key "\":(\"[^\"]*\"|[^,}]*)")) return ""
  s = substr(line, RSTART + length(key) + 3, RLENGTH - length(key) - 3)
  gsub(/"/, "", s)
  return s
}

# add(list, n, seen, item): appends item to list[0..n) unless seen; the new n.
function add(list, n, seen, item) {
  n += 0
  if (item in seen) return n
  seen[item] = 1
  list[n] = item
  return n + 1
}

/^\{/ {
  bench = field($0, "bench"); sys = field($0, "system"); metric = field($0, "metric")
  value = field($0, "value"); unit = field($0, "unit")
  if (match(metric, /_c[0-9]+(_b[0-9]+)?$/)) {
    base = substr(metric, 1, RSTART - 1)
    key = substr(metric, RSTART + 1)
    if (unit == "x") { t = bench ": ratios of " sys " (x)"; col = base }
    else { t = bench ": " base " (" unit ")"; col = sys }
    nt = add(tables, nt, seen_table, t)
    if (!((t, "k", key) in seen_row)) { seen_row[t, "k", key] = 1; rows[t, nrows[t]++] = key }
    if (!((t, "c", col) in seen_col)) { seen_col[t, "c", col] = 1; cols[t, ncols[t]++] = col }
    cell[t, key, col] = value
    next
  }
  row = "| " bench " | " sys " | " metric " | " value " | " unit " |"
  if (unit == "x") ratios[nr++] = row; else values[nv++] = row
}

function plain(title, list, n,   i) {
  if (!n) return
  print ""
  print "## " title
  print ""
  print "| bench | system | metric | median | unit |"
  print "|---|---|---|---:|---|"
  for (i = 0; i < n; i++) print list[i]
}

END {
  plain("Measurements", values, nv)
  plain("Ratios", ratios, nr)
  for (i = 0; i < nt; i++) {
    t = tables[i]
    sized = rows[t, 0] ~ /_b/
    print ""
    print "## " t
    print ""
    head = sized ? "| conns | bytes |" : "| conns |"
    rule = sized ? "|---:|---:|" : "|---:|"
    for (j = 0; j < ncols[t]; j++) { head = head " " cols[t, j] " |"; rule = rule "---:|" }
    print head
    print rule
    for (r = 0; r < nrows[t]; r++) {
      key = rows[t, r]
      split(key, part, "_")
      line = "| " substr(part[1], 2) " |" (sized ? " " substr(part[2], 2) " |" : "")
      for (j = 0; j < ncols[t]; j++) {
        c = (t SUBSEP key SUBSEP cols[t, j]) in cell ? cell[t, key, cols[t, j]] : ""
        line = line " " c " |"
      }
      print line
    }
  }
}
