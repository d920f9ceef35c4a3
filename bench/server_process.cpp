// ServerProcess: see server_process.hpp.

#include "server_process.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "harness.hpp"

namespace sa::bench {

namespace {

// read_port() reads the first line a server child writes on `fd` (waiting at
// most 10 s in all) and returns the port it names, 0 if none.
uint16_t read_port(int fd) {
  std::string line;
  char c;
  pollfd p{fd, POLLIN, 0};
  while (line.size() < 256 && ::poll(&p, 1, 10'000) > 0 && ::read(fd, &c, 1) == 1 && c != '\n') line += c;
  unsigned long port = 0;
  if (line.rfind("port ", 0) == 0) {
    port = std::strtoul(line.c_str() + 5, nullptr, 10);
  } else if (const auto at = line.rfind("127.0.0.1:"); at != std::string::npos) {
    port = std::strtoul(line.c_str() + at + 10, nullptr, 10);
  }
  return port < 65536 ? static_cast<uint16_t>(port) : 0;
}

// start() forks; the child (which dies with us) gets the pipe's write end
// and runs `child`, which must not return.
template <class Child>
ServerProcess start(const std::string& bench, const std::string& system, Child child) {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) fail(bench, "pipe2: " + std::string(std::strerror(errno)));
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) fail(bench, "fork: " + std::string(std::strerror(errno)));
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) std::_Exit(1);  // the parent died before prctl
    ::close(p[0]);
    child(p[1]);
    std::_Exit(1);
  }
  ::close(p[1]);
  ServerProcess s{system, pid, read_port(p[0])};
  ::close(p[0]);
  if (!s.port) {
    stop_server(s);
    fail(bench, system + " server did not start");
  }
  return s;
}

}  // namespace

ServerProcess fork_server(const std::string& bench, const std::string& system, void (*serve)(int out_fd)) {
  return start(bench, system, serve);
}

ServerProcess exec_server(const std::string& bench, const std::string& system, const std::vector<std::string>& argv) {
  return start(bench, system, [&](int out_fd) {
    std::vector<char*> args;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    if (::dup2(out_fd, STDOUT_FILENO) < 0) std::_Exit(1);  // dup2 clears O_CLOEXEC
    ::execv(args[0], args.data());
    std::fprintf(stderr, "bench %s: exec %s: %s\n", bench.c_str(), args[0], std::strerror(errno));
  });
}

void stop_server(ServerProcess& s) {
  if (s.pid <= 0) return;
  ::kill(s.pid, SIGKILL);
  ::waitpid(s.pid, nullptr, 0);
  s.pid = -1;
}

rlim_t raise_fd_limit() {
  rlimit rl{};
  ::getrlimit(RLIMIT_NOFILE, &rl);
  rl.rlim_cur = rl.rlim_max;
  ::setrlimit(RLIMIT_NOFILE, &rl);
  return rl.rlim_cur;
}

}  // namespace sa::bench
