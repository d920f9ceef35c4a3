// Benchmark harness: see harness.hpp.

#include "harness.hpp"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>

namespace sa::bench {

Args parse_args(int argc, char** argv, const char* bench) {
  Args args;
  bool reps_given = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--quick") {
      args.quick = true;
    } else if (a == "--reps" && i + 1 < argc) {
      args.reps = std::max(1, std::atoi(argv[++i]));
      reps_given = true;
    } else if (a == "--go" && i + 1 < argc) {
      args.go_peer = argv[++i];
    } else {
      std::cerr << "usage: bench_" << bench << " [--quick] [--reps N] [--go GO_PEER_BINARY]\n";
      std::exit(2);
    }
  }
  if (args.quick && !reps_given) args.reps = 3;
  return args;
}

double median(std::vector<double> values) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  size_t n = values.size();
  return n % 2 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
}

double measure(const Args& args, const std::function<double()>& once) {
  once();  // warm-up: stack pools, page faults, thread caches
  std::vector<double> samples;
  for (int i = 0; i < args.reps; ++i) samples.push_back(once());
  return median(std::move(samples));
}

void report(const std::string& bench, const std::string& system, const std::string& metric,
            double value, const std::string& unit) {
  // Four significant digits, without an exponent for values people read.
  const char* fmt = value >= 1e4 && value < 1e12 ? "%.0f" : "%.4g";
  char number[64];
  std::snprintf(number, sizeof number, fmt, value);
  std::printf("{\"bench\":\"%s\",\"system\":\"%s\",\"metric\":\"%s\",\"value\":%s,\"unit\":\"%s\"}\n",
              bench.c_str(), system.c_str(), metric.c_str(), number, unit.c_str());
  std::fflush(stdout);
}

void note(const std::string& bench, const std::string& text) {
  std::cerr << "bench " << bench << ": " << text << '\n';
}

void fail(const std::string& bench, const std::string& text) {
  std::cerr << "bench " << bench << ": FAILED: " << text << '\n';
  std::exit(1);
}

namespace {

// field() is the string value of "key":"..." in a JSON line, or "".
std::string field(const std::string& line, const std::string& key) {
  std::string pat = "\"" + key + "\":\"";
  size_t at = line.find(pat);
  if (at == std::string::npos) return "";
  at += pat.size();
  size_t end = line.find('"', at);
  return end == std::string::npos ? "" : line.substr(at, end - at);
}

}  // namespace

std::optional<double> run_go_peer(const Args& args, const std::string& bench,
                                  const std::string& metric) {
  if (args.go_peer.empty()) {
    note(bench, "no Go peer given (--go); skipping system go");
    return std::nullopt;
  }
  std::string cmd = "'" + args.go_peer + "' --reps " + std::to_string(args.reps);
  if (args.quick) cmd += " --quick";
  std::FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) {
    note(bench, "cannot start Go peer " + args.go_peer + ": " + std::strerror(errno));
    return std::nullopt;
  }
  std::optional<double> value;
  char buf[512];
  while (std::fgets(buf, sizeof buf, p)) {
    std::string line = buf;
    if (line.empty() || line[0] != '{') continue;
    std::fputs(buf, stdout);
    if (field(line, "system") == "go" && field(line, "metric") == metric) {
      size_t at = line.find("\"value\":");
      if (at != std::string::npos) value = std::strtod(line.c_str() + at + 8, nullptr);
    }
  }
  std::fflush(stdout);
  int status = ::pclose(p);
  if (status != 0) {
    note(bench, "Go peer " + args.go_peer + " failed (status " + std::to_string(status) + ")");
    return std::nullopt;
  }
  if (!value) note(bench, "Go peer printed no " + metric + " line");
  return value;
}

Pipe::Pipe(const std::string& bench) {
  if (::pipe(fd) != 0) fail(bench, "pipe() failed");
}

Pipe::~Pipe() {
  ::close(fd[0]);
  ::close(fd[1]);
}

}  // namespace sa::bench
