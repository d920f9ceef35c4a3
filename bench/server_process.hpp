#pragma once
// ServerProcess: a server under benchmark in a child process of its own
// (bench_echo, bench_http). The child dies with the benchmark
// (PR_SET_PDEATHSIG), listens on 127.0.0.1 with a port the kernel picks and
// says which on a pipe; the benchmark's client connects there.

#include <sys/resource.h>
#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

namespace sa::bench {

struct ServerProcess {
  std::string system;
  pid_t pid = -1;
  uint16_t port = 0;
};

// fork_server() forks a child that runs serve(out_fd): it must write
// "port N\n" to out_fd once listening, then serve until killed. Call it
// before this process starts threads. Fails the benchmark (fail()) if the
// child says no port within 10 s.
ServerProcess fork_server(const std::string& bench, const std::string& system, void (*serve)(int out_fd));

// exec_server() forks and execs argv[0] with argv, its stdout on the pipe;
// the port is read from its first line, "port N" or a line holding
// "127.0.0.1:N". Fails the benchmark like fork_server().
ServerProcess exec_server(const std::string& bench, const std::string& system, const std::vector<std::string>& argv);

// stop_server() kills the child (SIGKILL) and reaps it.
void stop_server(ServerProcess& s);

// raise_fd_limit() lifts the soft RLIMIT_NOFILE to the hard limit (children
// started afterwards inherit it) and returns it.
rlim_t raise_fd_limit();

}  // namespace sa::bench
