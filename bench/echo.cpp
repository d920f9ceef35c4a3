// bench_echo: requests per second and latency of TCP echo servers on
// loopback, all driven by the same client in the same run.
//
// Servers (each in a process of its own, started once for the whole run and
// listening on 127.0.0.1 with a kernel-chosen port):
//   sa         sa::net fibers on an sa::Runtime over all CPUs (echo_servers.hpp)
//   liburing   a hand-written io_uring loop per CPU, SO_REUSEPORT listeners
//   epoll      a hand-written epoll loop per CPU, SO_REUSEPORT listeners
//   threads    one std::thread per connection, blocking read / write
//   go         bench/go/echo: Go's net package, a goroutine per connection
//              (--go PATH; skipped without it)
// The C++ servers are forked from this process before it starts any thread
// or ring; the Go peer is forked and exec'ed (server_process.hpp).
//
// Client (this process, one thread, one io_uring): a closed loop per
// connection: send a message of S bytes, receive until all S came back
// (checked byte for byte), take the round trip, send again. For each
// connection count C in {1, 64, 1000}:
//   1. open C connections to every server (blocking connects, TCP_NODELAY),
//      all kept open while the servers take turns;
//   2. for each S in {64, 1024}: one warm-up round per server, then `reps`
//      repetitions, each a round of `duration` per server, servers in a
//      rotating order (drift on this shared machine hits all alike);
//   3. close the connections.
// A round starts every connection at once and counts the requests that
// complete before its end; requests in flight then are drained, not counted.
// requests_per_s = completed / duration; p50_us, p99_us: percentiles of that
// round's round trips; server_cpu_us_per_req: the server process's CPU
// time (user + system, /proc, 10 ms ticks) over the round and its drain, per
// request completed; client_cpu_busy: this process's CPU time over the
// round's wall time (near 1: the client, not the server, sets the pace);
// others_cpu_busy: the CPU time every other process on the machine took
// during the round (/proc/stat minus client and server) over CPUs x wall
// time: how much of the shared machine was not ours.
// Each reported value is the median over repetitions.
//
// Lines: per system and (C, S), metrics requests_per_s_c<C>_b<S> (unit
// 1/s), p50_us_, p99_us_ and server_cpu_us_per_req_c<C>_b<S> (unit us),
// client_cpu_busy_ and others_cpu_busy_c<C>_b<S> (unit fraction). Ratios for system
// sa (unit x), throughput of sa over the peer's:
//   fraction_of_liburing_c<C>_b<S>    goal >= 0.9 from C = 64
//   speedup_vs_{epoll,threads,go}_c<C>_b<S>   goal vs threads >= 2 at C = 1000
// and the goals' summaries fraction_of_liburing_min (over C >= 64) and
// speedup_vs_threads_c1000_min (over S). Reported, not asserted.
//
// On this 2-CPU machine the client's thread and the server under test share
// the CPUs: the client takes most of one, so the numbers compare servers
// under one load, not each server's peak.

#include <arpa/inet.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "echo_servers.hpp"
#include "harness.hpp"
#include "server_process.hpp"

using namespace sa::bench;

namespace {

constexpr const char* kBench = "echo";
constexpr int kConns[] = {1, 64, 1000};
constexpr std::size_t kSizes[] = {64, 1024};
constexpr int64_t kStallNs = 5'000'000'000;  // no completion for this long: a server hung

// A server under test, with the client's connections to it and its samples.
struct Server {
  ServerProcess proc;
  std::vector<int> conns;             // the client's connections to it
  std::vector<double> rps, p50, p99, server_cpu, client_cpu, others_cpu;  // one per repetition, this (C, S)
  const std::string& system() const { return proc.system; }
};

// --- client ----------------------------------------------------------------

// connect_all() opens n blocking connections to 127.0.0.1:port.
std::vector<int> connect_all(const Server& s, int n) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(s.proc.port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::vector<int> fds;
  for (int i = 0; i < n; ++i) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0)
      fail(kBench, s.system() + ": connection " + std::to_string(i) + ": " + std::strerror(errno));
    const int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fds.push_back(fd);
  }
  return fds;
}

struct Round {
  double rps = 0, p50_us = 0, p99_us = 0;
  double server_cpu_us = 0;  // the server's CPU time (user + system) per request
  double client_cpu = 0;     // the client's CPU time / the round's wall time
  double others_cpu = 0;     // other processes' CPU time / (CPUs x wall time)
};

// cpu_ns() is the CPU time (user + system, all threads) of process `pid`
// from /proc, in clock ticks turned to ns; 0 if unreadable.
int64_t cpu_ns(pid_t pid) {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/stat", static_cast<int>(pid));
  std::FILE* f = std::fopen(path, "r");
  if (!f) return 0;
  char buf[1024];
  const std::size_t n = std::fread(buf, 1, sizeof buf - 1, f);
  std::fclose(f);
  buf[n] = '\0';
  const char* p = std::strrchr(buf, ')');  // the command name may hold spaces
  unsigned long long utime = 0, stime = 0;
  if (!p || std::sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime, &stime) != 2)
    return 0;
  return static_cast<int64_t>((utime + stime) * (1'000'000'000ULL / static_cast<unsigned long long>(::sysconf(_SC_CLK_TCK))));
}

// machine_cpu_ns() is the CPU time all processes spent in user and system
// mode (/proc/stat; interrupts and softirqs outside process context not
// included), in clock ticks turned to ns; 0 if unreadable.
int64_t machine_cpu_ns() {
  std::FILE* f = std::fopen("/proc/stat", "r");
  if (!f) return 0;
  unsigned long long user = 0, nice = 0, system = 0;
  const int got = std::fscanf(f, "cpu %llu %llu %llu", &user, &nice, &system);
  std::fclose(f);
  if (got != 3) return 0;
  return static_cast<int64_t>((user + nice + system) * (1'000'000'000ULL / static_cast<unsigned long long>(::sysconf(_SC_CLK_TCK))));
}

// self_cpu_ns() is this process's CPU time (user + system).
int64_t self_cpu_ns() {
  rusage ru{};
  ::getrusage(RUSAGE_SELF, &ru);
  auto ns = [](timeval t) { return int64_t(t.tv_sec) * 1'000'000'000 + int64_t(t.tv_usec) * 1000; };
  return ns(ru.ru_utime) + ns(ru.ru_stime);
}

// Client: one io_uring driving closed loops over a server's connections.
class Client {
 public:
  explicit Client(unsigned max_conns) {
    io_uring_params p{};
    p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
    unsigned entries = 1;
    while (entries < max_conns) entries *= 2;
    int r = io_uring_queue_init_params(entries, &ring_, &p);
    if (r == -EINVAL) {
      p = io_uring_params{};
      r = io_uring_queue_init_params(entries, &ring_, &p);
    }
    if (r < 0) fail(kBench, "client io_uring_queue_init: " + std::string(std::strerror(-r)));
  }
  ~Client() { io_uring_queue_exit(&ring_); }
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // round() runs every connection of `s` in a closed loop of `size`-byte
  // messages for `duration_ns` and returns throughput and latency.
  Round round(const Server& s, std::size_t size, int64_t duration_ns) {
    const std::size_t n = s.conns.size();
    msg_.resize(size);
    for (std::size_t i = 0; i < size; ++i) msg_[i] = static_cast<char>('a' + i * 7 % 26);
    in_.assign(n * size, '\0');
    state_.assign(n, Conn{});
    lat_.clear();
    lat_.reserve(1 << 20);
    size_ = size;

    const int64_t server_cpu0 = cpu_ns(s.proc.pid), client_cpu0 = self_cpu_ns(), machine_cpu0 = machine_cpu_ns();
    std::size_t completed = 0;  // counted or not
    const int64_t start = now_ns();
    const int64_t end = start + duration_ns;
    for (std::size_t i = 0; i < n; ++i) {
      state_[i].t0 = start;
      post_send(s, i);
    }
    std::size_t running = n;
    int64_t last = start;
    while (running) {
      __kernel_timespec ts{1, 0};
      io_uring_cqe* first;
      const int r = io_uring_submit_and_wait_timeout(&ring_, &first, 1, &ts, nullptr);
      if (r < 0 && r != -ETIME && r != -EINTR) fail(kBench, "client io_uring: " + std::string(std::strerror(-r)));
      unsigned head, seen = 0;
      io_uring_cqe* cqe;
      io_uring_for_each_cqe(&ring_, head, cqe) {
        ++seen;
        const std::size_t i = cqe->user_data >> 1;
        const bool is_recv = cqe->user_data & 1;
        if (cqe->res <= 0)
          fail(kBench, s.system() + ": connection " + std::to_string(i) + ": " +
                           (cqe->res == 0 ? "closed by the server" : std::strerror(-cqe->res)));
        Conn& c = state_[i];
        c.done += static_cast<std::size_t>(cqe->res);
        if (c.done < size) {  // a short send or a partial echo
          is_recv ? post_recv(s, i) : post_send(s, i);
        } else if (!is_recv) {
          c.done = 0;
          post_recv(s, i);
        } else {
          if (std::memcmp(in_.data() + i * size, msg_.data(), size) != 0)
            fail(kBench, s.system() + ": an echo differs from its message");
          const int64_t t1 = now_ns();
          ++completed;
          if (t1 <= end) lat_.push_back(static_cast<uint32_t>(std::min<int64_t>(t1 - c.t0, UINT32_MAX)));
          if (t1 < end) {
            c.t0 = t1;
            c.done = 0;
            post_send(s, i);
          } else {
            --running;
          }
        }
      }
      io_uring_cq_advance(&ring_, seen);
      const int64_t now = now_ns();
      if (seen) last = now;
      else if (now - last > kStallNs) fail(kBench, s.system() + ": no echo for 5 s (a server hung?)");
    }

    Round out;
    out.rps = double(lat_.size()) / (double(duration_ns) / 1e9);
    const double wall = double(now_ns() - start);
    const double client_cpu = double(self_cpu_ns() - client_cpu0);
    const double server_cpu = double(cpu_ns(s.proc.pid) - server_cpu0);
    out.client_cpu = client_cpu / wall;
    out.server_cpu_us = server_cpu / 1e3 / double(std::max<std::size_t>(completed, 1));
    const double others = double(machine_cpu_ns() - machine_cpu0) - client_cpu - server_cpu;
    out.others_cpu = std::max(0.0, others / (wall * echo::event_loops()));
    if (!lat_.empty()) {
      auto pct = [&](double q) {
        const auto k = std::min(lat_.size() - 1, static_cast<std::size_t>(q * double(lat_.size())));
        std::nth_element(lat_.begin(), lat_.begin() + static_cast<std::ptrdiff_t>(k), lat_.end());
        return lat_[k] / 1e3;
      };
      out.p50_us = pct(0.50);
      out.p99_us = pct(0.99);
    }
    return out;
  }

 private:
  struct Conn {
    std::size_t done = 0;  // bytes sent, or received, of the current message
    int64_t t0 = 0;        // when the current message's first send was queued
  };

  io_uring_sqe* sqe() {
    for (;;) {
      if (io_uring_sqe* q = io_uring_get_sqe(&ring_)) return q;
      io_uring_submit(&ring_);
    }
  }
  void post_send(const Server& s, std::size_t i) {
    io_uring_sqe* q = sqe();
    io_uring_prep_send(q, s.conns[i], msg_.data() + state_[i].done, size_ - state_[i].done, MSG_NOSIGNAL);
    io_uring_sqe_set_data64(q, i << 1);
  }
  void post_recv(const Server& s, std::size_t i) {
    io_uring_sqe* q = sqe();
    io_uring_prep_recv(q, s.conns[i], in_.data() + i * size_ + state_[i].done, size_ - state_[i].done, 0);
    io_uring_sqe_set_data64(q, i << 1 | 1);
  }

  io_uring ring_{};
  std::size_t size_ = 0;
  std::string msg_, in_;
  std::vector<Conn> state_;
  std::vector<uint32_t> lat_;  // round trips of this round, ns (saturating)
};

std::string key(int conns, std::size_t size) {
  return "_c" + std::to_string(conns) + "_b" + std::to_string(size);
}

}  // namespace

int main(int argc, char** argv) {
  const Args args = parse_args(argc, argv, kBench);
  const int64_t duration = args.pick(500'000'000L, 200'000'000L);  // one round, ns
  const int64_t warmup = args.pick(250'000'000L, 100'000'000L);
  ::signal(SIGPIPE, SIG_IGN);

  // Every server at once holds 1000 connections of ours: ~1000 fds each here.
  const int max_conns = *std::max_element(std::begin(kConns), std::end(kConns));
  const rlim_t limit = raise_fd_limit();
  const int systems = 4 + !args.go_peer.empty();
  if (limit < rlim_t(systems * max_conns + 64))
    fail(kBench, "RLIMIT_NOFILE hard limit " + std::to_string(limit) + " is below the " +
                     std::to_string(systems * max_conns + 64) + " descriptors this needs");

  // Servers first: forks before this process has threads or rings.
  std::vector<Server> servers;
  servers.push_back({fork_server(kBench, "sa", echo::serve_sa)});
  servers.push_back({fork_server(kBench, "liburing", echo::serve_liburing)});
  servers.push_back({fork_server(kBench, "epoll", echo::serve_epoll)});
  servers.push_back({fork_server(kBench, "threads", echo::serve_threads)});
  if (!args.go_peer.empty()) servers.push_back({exec_server(kBench, "go", {args.go_peer, "--port", "0"})});
  else note(kBench, "no Go peer given (--go); skipping system go");
  note(kBench, "liburing and epoll run " + std::to_string(echo::event_loops()) +
                   " loops (one per CPU); the client is one thread sharing the CPUs");

  Client client(static_cast<unsigned>(max_conns));
  // results[system][key] = {rps, p50, p99} medians.
  std::map<std::string, std::map<std::string, Round>> results;
  for (int conns : kConns) {
    for (Server& s : servers) s.conns = connect_all(s, conns);
    for (std::size_t size : kSizes) {
      for (Server& s : servers) {
        client.round(s, size, warmup);
        s.rps.clear(), s.p50.clear(), s.p99.clear(), s.server_cpu.clear(), s.client_cpu.clear(), s.others_cpu.clear();
      }
      for (int rep = 0; rep < args.reps; ++rep) {
        for (std::size_t k = 0; k < servers.size(); ++k) {
          Server& s = servers[(k + static_cast<std::size_t>(rep)) % servers.size()];
          const Round r = client.round(s, size, duration);
          s.rps.push_back(r.rps), s.p50.push_back(r.p50_us), s.p99.push_back(r.p99_us);
          s.server_cpu.push_back(r.server_cpu_us), s.client_cpu.push_back(r.client_cpu);
          s.others_cpu.push_back(r.others_cpu);
        }
      }
      const std::string kk = key(conns, size);
      for (Server& s : servers) {
        Round& m = results[s.system()][kk];
        m = {median(s.rps), median(s.p50), median(s.p99), median(s.server_cpu), median(s.client_cpu),
             median(s.others_cpu)};
        report(kBench, s.system(), "requests_per_s" + kk, m.rps, "1/s");
        report(kBench, s.system(), "p50_us" + kk, m.p50_us, "us");
        report(kBench, s.system(), "p99_us" + kk, m.p99_us, "us");
        report(kBench, s.system(), "server_cpu_us_per_req" + kk, m.server_cpu_us, "us");
        report(kBench, s.system(), "client_cpu_busy" + kk, m.client_cpu, "fraction");
        report(kBench, s.system(), "others_cpu_busy" + kk, m.others_cpu, "fraction");
      }
    }
    for (Server& s : servers) {
      for (int fd : s.conns) ::close(fd);
      s.conns.clear();
    }
  }
  for (Server& s : servers) stop_server(s.proc);

  // Ratios: sa's throughput over each peer's.
  double liburing_min = 1e9, threads_min = 1e9;
  for (int conns : kConns) {
    for (std::size_t size : kSizes) {
      const std::string kk = key(conns, size);
      const double sa = results["sa"][kk].rps;
      auto ratio = [&](const std::string& peer) -> double {
        auto it = results.find(peer);
        return it == results.end() || it->second[kk].rps <= 0 ? 0 : sa / it->second[kk].rps;
      };
      const double lf = ratio("liburing");
      report(kBench, "sa", "fraction_of_liburing" + kk, lf, "x");
      if (conns >= 64) liburing_min = std::min(liburing_min, lf);
      report(kBench, "sa", "speedup_vs_epoll" + kk, ratio("epoll"), "x");
      const double th = ratio("threads");
      report(kBench, "sa", "speedup_vs_threads" + kk, th, "x");
      if (conns == 1000) threads_min = std::min(threads_min, th);
      if (results.count("go")) report(kBench, "sa", "speedup_vs_go" + kk, ratio("go"), "x");
    }
  }
  report(kBench, "sa", "fraction_of_liburing_min", liburing_min, "x");
  report(kBench, "sa", "speedup_vs_threads_c1000_min", threads_min, "x");
  return 0;
}
