// http_hello: a small HTTP/1.1 server that answers every request with
// "Hello, World!", one fiber per connection, keep-alive and pipelining.
//
//   http_hello [ADDR] [--vprocs N] [--no-pin]   ADDR defaults to 127.0.0.1:8080
//
// --no-pin leaves the VProcs unpinned (Options::pin = false): better when a
// load generator shares the CPUs, as in bench/run http.
//
// Bounded requests: the request line and headers must fit in 8 KiB (431
// Request Header Fields Too Large otherwise), a body in 64 KiB (413); a
// request that does not parse gets 400 Bad Request. Each of these closes the
// connection. Drive it with: wrk -t2 -c64 -d5s http://127.0.0.1:8080/

#include <sa/sa.hpp>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

namespace {

constexpr std::size_t kMaxHead = 8 * 1024;
constexpr std::size_t kMaxBody = 64 * 1024;

constexpr std::string_view kHello =
    "HTTP/1.1 200 OK\r\nServer: sa\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, World!";

std::string_view error_response(int status) {
  switch (status) {
    case 400: return "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    case 413: return "HTTP/1.1 413 Content Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    default: return "HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
  }
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(a[i])) != std::tolower(static_cast<unsigned char>(b[i]))) return false;
  return true;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

struct Request {
  int status = 0;          // 0: fine; else the error status to answer with
  bool keep_alive = true;
  std::size_t body = 0;    // Content-Length
};

// parse() reads the head (request line and headers, without the final CRLF).
Request parse(std::string_view head) {
  Request r;
  std::size_t eol = head.find("\r\n");
  std::string_view line = head.substr(0, eol);
  const std::size_t sp1 = line.find(' ');
  const std::size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp1 == 0 || sp2 == std::string_view::npos || sp2 == sp1 + 1 || line.find(' ', sp2 + 1) != std::string_view::npos) {
    r.status = 400;
    return r;
  }
  for (char c : line.substr(0, sp1))
    if (c < 'A' || c > 'Z') {
      r.status = 400;
      return r;
    }
  const std::string_view version = line.substr(sp2 + 1);
  if (version == "HTTP/1.0") r.keep_alive = false;
  else if (version != "HTTP/1.1") {
    r.status = 400;
    return r;
  }
  while (eol != std::string_view::npos) {
    const std::size_t start = eol + 2;
    eol = head.find("\r\n", start);
    const std::string_view h = head.substr(start, eol == std::string_view::npos ? std::string_view::npos : eol - start);
    if (h.empty()) continue;
    const std::size_t colon = h.find(':');
    if (colon == 0 || colon == std::string_view::npos) {
      r.status = 400;
      return r;
    }
    const std::string_view name = h.substr(0, colon), value = trim(h.substr(colon + 1));
    if (iequals(name, "connection")) {
      if (iequals(value, "close")) r.keep_alive = false;
      else if (iequals(value, "keep-alive")) r.keep_alive = true;
    } else if (iequals(name, "content-length")) {
      std::size_t n = 0;
      if (value.empty()) r.status = 400;
      for (char c : value) {
        if (c < '0' || c > '9' || n > kMaxBody) {
          r.status = c < '0' || c > '9' ? 400 : 413;
          return r;
        }
        n = n * 10 + static_cast<std::size_t>(c - '0');
      }
      if (n > kMaxBody) r.status = 413;
      r.body = n;
    } else if (iequals(name, "transfer-encoding")) {
      r.status = 400;  // chunked bodies are not supported by this sample
    }
  }
  return r;
}

void serve(sa::net::TcpStream conn) {
  std::string in(kMaxHead + kMaxBody, '\0');
  std::size_t have = 0;
  std::string out;
  try {
    for (;;) {
      const std::size_t n = conn.read(in.data() + have, in.size() - have);
      if (n == 0) return;  // the client closed
      have += n;
      // Answer every complete request in the buffer (pipelining), in one write.
      std::size_t pos = 0;
      bool close_after = false;
      for (;;) {
        const std::string_view buf(in.data() + pos, have - pos);
        const std::size_t end = buf.find("\r\n\r\n");
        if (end == std::string_view::npos) {
          if (buf.size() >= kMaxHead) {
            out += error_response(431);
            close_after = true;
          }
          break;
        }
        if (end + 4 > kMaxHead) {
          out += error_response(431);
          close_after = true;
          break;
        }
        const Request r = parse(buf.substr(0, end));
        if (r.status) {
          out += error_response(r.status);
          close_after = true;
          break;
        }
        if (buf.size() < end + 4 + r.body) break;  // the body is still coming
        out += kHello;
        pos += end + 4 + r.body;
        if (!r.keep_alive) {
          close_after = true;
          break;
        }
      }
      if (!out.empty()) {
        conn.write_all(out);
        out.clear();
      }
      if (close_after) {
        conn.shutdown(SHUT_WR);
        return;
      }
      std::memmove(in.data(), in.data() + pos, have - pos);
      have -= pos;
    }
  } catch (const std::system_error& e) {
    if (e.code().value() != ECONNRESET && e.code().value() != EPIPE)
      std::fprintf(stderr, "http_hello: connection: %s\n", e.what());
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string addr = "127.0.0.1:8080";
  int vprocs = 0;
  bool pin = true;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--vprocs") && i + 1 < argc) vprocs = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--no-pin")) pin = false;
    else if (argv[i][0] != '-') addr = argv[i];
    else {
      std::fprintf(stderr, "usage: http_hello [ADDR] [--vprocs N] [--no-pin]\n");
      return 2;
    }
  }
  try {
    sa::Runtime rt{{.vprocs = vprocs, .pin = pin}};
    rt.run([&] {
      auto listener = sa::net::TcpListener::bind(addr, 4096);
      std::printf("http_hello: listening on http://%s/ with %d VProcs\n", listener.local_addr().to_string().c_str(),
                  rt.vprocs());
      std::fflush(stdout);
      for (;;) {
        std::error_code ec;
        sa::net::TcpStream conn = listener.accept(ec);
        if (ec) {
          std::fprintf(stderr, "http_hello: accept: %s\n", ec.message().c_str());
          continue;
        }
        conn.set_nodelay();
        sa::spawn([c = std::move(conn)]() mutable { serve(std::move(c)); }).detach();
      }
    });
  } catch (const std::exception& e) {
    std::fprintf(stderr, "http_hello: %s\n", e.what());
    return 1;
  }
}
