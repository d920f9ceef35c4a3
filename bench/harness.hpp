#pragma once
// Benchmark harness: options, timing, medians and the JSON-lines report that
// every benchmark in bench/ prints (see bench/README.md).
//
// Contract of a report line, one per (system, metric):
//   {"bench":"spawn_join","system":"sa","metric":"ns_per_op","value":123.4,"unit":"ns"}
// A value is the median over Args::reps repetitions (a warm-up repetition is
// run first and discarded by measure()). Ratios are their own lines, e.g.
// metric "speedup_vs_std_thread" = peer median / sa median, unit "x".
//
// Lines go to stdout; notes for humans (skipped peers, progress) go to stderr
// so that stdout stays pure JSON lines.

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace sa::bench {

struct Args {
  bool quick = false;   // --quick: 3 repetitions and fewer iterations
  int reps = 7;         // repetitions whose median is reported
  std::string go_peer;  // --go PATH: the Go peer binary to run, if any
  // pick() is `full` normally and `quick` under --quick.
  template <class T>
  T pick(T full, T quick_value) const {
    return quick ? quick_value : full;
  }
};

// parse_args() reads --quick, --reps N and --go PATH; prints usage and exits
// with status 2 on anything else.
Args parse_args(int argc, char** argv, const char* bench);

// now_ns() is a monotonic clock reading in nanoseconds.
inline int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// median() is the median of `values` (mean of the middle two for even sizes);
// 0 for none.
double median(std::vector<double> values);

// measure() runs `once` one time to warm up, then args.reps times, and returns
// the median of what the repetitions returned (each a cost per operation).
double measure(const Args& args, const std::function<double()>& once);

// report() prints one JSON line to stdout and flushes it.
void report(const std::string& bench, const std::string& system, const std::string& metric,
            double value, const std::string& unit);

// note() prints "bench <bench>: <text>" to stderr.
void note(const std::string& bench, const std::string& text);

// run_go_peer() runs the Go peer binary args.go_peer (passing --quick when
// set), echoes every JSON line it prints to stdout, and returns the value of
// the line whose system is "go" and whose metric is `metric`. Returns nullopt
// (with a note) when there is no peer or it fails.
std::optional<double> run_go_peer(const Args& args, const std::string& bench,
                                  const std::string& metric);

// fail() prints "bench <bench>: FAILED: <text>" to stderr and exits with 1.
[[noreturn]] void fail(const std::string& bench, const std::string& text);

// Pipe: an RAII pipe for benchmarks whose fibers block in read(); a failed
// pipe() ends the run with fail(bench, ...).
struct Pipe {
  explicit Pipe(const std::string& bench);
  ~Pipe();
  Pipe(const Pipe&) = delete;
  Pipe& operator=(const Pipe&) = delete;
  int fd[2] = {-1, -1};
};

}  // namespace sa::bench
