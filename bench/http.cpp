// bench_http: requests per second of an HTTP/1.1 "Hello, World!" server on
// sa against Go's net/http, both under the same wrk load in the same run.
//
//   sa   samples/http_hello.cpp, built as bench_http_hello next to this
//        binary (one fiber per connection, sa::Runtime on all CPUs,
//        --no-pin: its VProcs unpinned, as Go's threads are)
//   go   bench/go/http: net/http, GOMAXPROCS = all CPUs (--go PATH;
//        skipped without it)
// Both run as child processes (server_process.hpp), started once, on
// 127.0.0.1 with kernel-chosen ports. For each connection count C in
// {64, 1000}: one warm-up `wrk -t1 -cC -d1s` per server, then `reps`
// repetitions of `wrk -t1 -cC -dDs --latency` (D = 2, 1 with --quick) per
// server, servers in a rotating order. wrk keeps every connection alive and
// sends the next request when the previous reply came (no pipelining).
//
// Lines per system: requests_per_s_c<C> (wrk's Requests/sec, unit 1/s),
// p50_us_c<C> and p99_us_c<C> (wrk's latency distribution, unit us),
// medians over repetitions; for sa, speedup_vs_go_c<C> = sa's requests/s
// median / go's (unit x). A reply that is not 2xx fails the benchmark;
// socket errors are reported as notes.
//
// Without wrk on PATH it prints a note and no lines (exit 0). The machine
// has 2 CPUs: wrk's one thread and the server share them.

#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "harness.hpp"
#include "server_process.hpp"

using namespace sa::bench;

namespace {

constexpr const char* kBench = "http";
constexpr int kConns[] = {64, 1000};

struct Sample {
  double rps = 0, p50_us = 0, p99_us = 0;
};

struct Server {
  ServerProcess proc;
  std::vector<double> rps, p50, p99;  // one per repetition, this C
};

// on_path() is true if `name` is an executable in a directory of $PATH.
bool on_path(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::string dirs = path ? path : "/usr/bin:/bin";
  for (std::size_t at = 0; at <= dirs.size();) {
    std::size_t end = dirs.find(':', at);
    if (end == std::string::npos) end = dirs.size();
    const std::string dir = dirs.substr(at, end - at);
    if (::access(((dir.empty() ? "." : dir) + "/" + name).c_str(), X_OK) == 0) return true;
    at = end + 1;
  }
  return false;
}

// self_dir() is the directory of this executable.
std::string self_dir() {
  char buf[PATH_MAX];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return ".";
  std::string p(buf, static_cast<std::size_t>(n));
  const auto slash = p.rfind('/');
  return slash == std::string::npos ? "." : p.substr(0, slash);
}

// wrk_us() reads one of wrk's durations ("512.34us", "1.20ms", "2.00s") in µs.
double wrk_us(const char* s) {
  char* end = nullptr;
  const double v = std::strtod(s, &end);
  if (!std::strncmp(end, "us", 2)) return v;
  if (!std::strncmp(end, "ms", 2)) return v * 1e3;
  if (!std::strncmp(end, "s", 1)) return v * 1e6;
  if (!std::strncmp(end, "m", 1)) return v * 60e6;
  return v;
}

// wrk() runs wrk against the server for `seconds` with `conns` connections
// and returns what it measured. Fails the benchmark if wrk fails, reports
// no rate, or saw replies that are not 2xx/3xx.
Sample wrk(const Server& s, int conns, int seconds) {
  const std::string cmd = "wrk -t1 -c" + std::to_string(conns) + " -d" + std::to_string(seconds) +
                          "s --latency http://127.0.0.1:" + std::to_string(s.proc.port) + "/ 2>&1";
  std::FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) fail(kBench, "cannot run " + cmd);
  Sample out;
  std::string output;
  char line[512];
  while (std::fgets(line, sizeof line, p)) {
    output += line;
    const char* t = line + std::strspn(line, " \t");
    if (!std::strncmp(t, "Requests/sec:", 13)) out.rps = std::strtod(t + 13, nullptr);
    else if (!std::strncmp(t, "50%", 3)) out.p50_us = wrk_us(t + 3 + std::strspn(t + 3, " \t"));
    else if (!std::strncmp(t, "99%", 3)) out.p99_us = wrk_us(t + 3 + std::strspn(t + 3, " \t"));
    else if (!std::strncmp(t, "Non-2xx", 7)) fail(kBench, s.proc.system + ": " + t);
    else if (!std::strncmp(t, "Socket errors:", 14)) {
      std::string e = t;
      if (!e.empty() && e.back() == '\n') e.pop_back();
      note(kBench, s.proc.system + " at " + std::to_string(conns) + " connections: " + e);
    }
  }
  if (::pclose(p) != 0 || out.rps <= 0) fail(kBench, s.proc.system + ": wrk failed:\n" + output);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  const Args args = parse_args(argc, argv, kBench);
  if (!on_path("wrk")) {
    note(kBench, "wrk not found (scripts/install-deps --bench installs it); skipping the benchmark");
    return 0;
  }
  const int seconds = args.pick(2, 1);
  const int max_conns = *std::max_element(std::begin(kConns), std::end(kConns));
  if (raise_fd_limit() < rlim_t(max_conns + 64))
    fail(kBench, "RLIMIT_NOFILE hard limit is below the " + std::to_string(max_conns + 64) + " descriptors wrk needs");

  std::vector<Server> servers;
  // Unpinned (--no-pin), as Go's threads are: wrk shares the CPUs, and a
  // pinned VProc cannot leave the CPU wrk runs on (bench/README.md).
  servers.push_back({exec_server(kBench, "sa", {self_dir() + "/bench_http_hello", "127.0.0.1:0", "--no-pin"})});
  if (!args.go_peer.empty()) servers.push_back({exec_server(kBench, "go", {args.go_peer, "--port", "0"})});
  else note(kBench, "no Go peer given (--go); skipping system go");

  std::vector<double> sa_rps, go_rps;
  for (int conns : kConns) {
    for (Server& s : servers) {
      wrk(s, conns, 1);  // warm-up
      s.rps.clear(), s.p50.clear(), s.p99.clear();
    }
    for (int rep = 0; rep < args.reps; ++rep) {
      for (std::size_t k = 0; k < servers.size(); ++k) {
        Server& s = servers[(k + static_cast<std::size_t>(rep)) % servers.size()];
        const Sample r = wrk(s, conns, seconds);
        s.rps.push_back(r.rps), s.p50.push_back(r.p50_us), s.p99.push_back(r.p99_us);
      }
    }
    const std::string c = "_c" + std::to_string(conns);
    for (Server& s : servers) {
      report(kBench, s.proc.system, "requests_per_s" + c, median(s.rps), "1/s");
      report(kBench, s.proc.system, "p50_us" + c, median(s.p50), "us");
      report(kBench, s.proc.system, "p99_us" + c, median(s.p99), "us");
    }
    if (servers.size() > 1) report(kBench, "sa", "speedup_vs_go" + c, median(servers[0].rps) / median(servers[1].rps), "x");
  }
  for (Server& s : servers) stop_server(s.proc);
  return 0;
}
