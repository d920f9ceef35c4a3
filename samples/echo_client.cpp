// echo_client: a load generator for echo servers. Each connection is a fiber
// that sends a message, waits for the whole echo, and measures the round
// trip; at the end it prints requests/s and latency percentiles.
//
//   echo_client [ADDR] [--conns N] [--size BYTES] [--duration SECONDS]
//               [--vprocs N] [--json SYSTEM]
//
// ADDR defaults to 127.0.0.1:7000. --json prints one JSON line per metric
// in the bench format, labelled with SYSTEM, instead of the text report.

#include <sa/sa.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

struct Config {
  std::string addr = "127.0.0.1:7000";
  int conns = 64;
  std::size_t size = 64;
  double seconds = 5;
  int vprocs = 0;
  const char* json = nullptr;
};

struct Result {
  std::vector<uint32_t> latencies_ns;  // one per request (saturating)
  std::string error;
};

void client(const Config& cfg, std::chrono::steady_clock::time_point end, Result& out) {
  try {
    auto conn = sa::net::TcpStream::connect(cfg.addr, sa::io::deadline_after(std::chrono::seconds(10)));
    conn.set_nodelay();
    std::string msg(cfg.size, 'e'), back(cfg.size, '\0');
    out.latencies_ns.reserve(1 << 16);
    while (std::chrono::steady_clock::now() < end) {
      const auto t0 = std::chrono::steady_clock::now();
      conn.write_all(msg);
      if (conn.read_exact(back.data(), back.size()) != back.size()) {
        out.error = "server closed the connection";
        return;
      }
      const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count();
      out.latencies_ns.push_back(static_cast<uint32_t>(std::min<long long>(ns, UINT32_MAX)));
    }
  } catch (const std::exception& e) {
    out.error = e.what();
  }
}

}  // namespace

int main(int argc, char** argv) {
  Config cfg;
  for (int i = 1; i < argc; ++i) {
    auto next = [&] { return i + 1 < argc ? argv[++i] : (std::fprintf(stderr, "missing value\n"), std::exit(2), ""); };
    if (!std::strcmp(argv[i], "--conns")) cfg.conns = std::atoi(next());
    else if (!std::strcmp(argv[i], "--size")) cfg.size = static_cast<std::size_t>(std::atol(next()));
    else if (!std::strcmp(argv[i], "--duration")) cfg.seconds = std::atof(next());
    else if (!std::strcmp(argv[i], "--vprocs")) cfg.vprocs = std::atoi(next());
    else if (!std::strcmp(argv[i], "--json")) cfg.json = next();
    else if (argv[i][0] != '-') cfg.addr = argv[i];
    else {
      std::fprintf(stderr,
                   "usage: echo_client [ADDR] [--conns N] [--size BYTES] [--duration SECONDS] [--vprocs N] "
                   "[--json SYSTEM]\n");
      return 2;
    }
  }
  if (cfg.conns <= 0 || cfg.size == 0 || cfg.seconds <= 0) {
    std::fprintf(stderr, "echo_client: --conns, --size and --duration must be positive\n");
    return 2;
  }
  std::vector<Result> results(static_cast<std::size_t>(cfg.conns));
  double elapsed = 0;
  try {
    sa::Runtime rt{{.vprocs = cfg.vprocs}};
    rt.run([&] {
      const auto start = std::chrono::steady_clock::now();
      const auto end = start + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                   std::chrono::duration<double>(cfg.seconds));
      std::vector<sa::Fiber> fibers;
      for (auto& r : results) fibers.push_back(sa::spawn([&cfg, end, &r] { client(cfg, end, r); }));
      for (auto& f : fibers) f.join();
      elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    });
  } catch (const std::exception& e) {
    std::fprintf(stderr, "echo_client: %s\n", e.what());
    return 1;
  }
  std::vector<uint32_t> all;
  int failed = 0;
  for (auto& r : results) {
    if (!r.error.empty()) {
      if (failed++ == 0) std::fprintf(stderr, "echo_client: %s\n", r.error.c_str());
      continue;
    }
    all.insert(all.end(), r.latencies_ns.begin(), r.latencies_ns.end());
  }
  if (all.empty()) {
    std::fprintf(stderr, "echo_client: no request completed (%d connections failed)\n", failed);
    return 1;
  }
  std::sort(all.begin(), all.end());
  auto pct = [&](double p) { return all[std::min(all.size() - 1, static_cast<std::size_t>(p * static_cast<double>(all.size())))] / 1000.0; };
  const double rps = static_cast<double>(all.size()) / elapsed;
  if (cfg.json) {
    const char* fmt = "{\"bench\":\"echo\",\"system\":\"%s\",\"conns\":%d,\"size\":%zu,\"metric\":\"%s\",\"value\":%.1f,\"unit\":\"%s\"}\n";
    std::printf(fmt, cfg.json, cfg.conns, cfg.size, "requests_per_s", rps, "1/s");
    std::printf(fmt, cfg.json, cfg.conns, cfg.size, "p50_latency", pct(0.50), "us");
    std::printf(fmt, cfg.json, cfg.conns, cfg.size, "p99_latency", pct(0.99), "us");
  } else {
    std::printf("echo_client: %d connections, %zu-byte messages, %.1f s\n", cfg.conns, cfg.size, elapsed);
    std::printf("  requests/s  %.0f\n  p50         %.1f us\n  p99         %.1f us\n", rps, pct(0.50), pct(0.99));
    if (failed) std::printf("  failed connections: %d\n", failed);
  }
  return failed ? 1 : 0;
}
