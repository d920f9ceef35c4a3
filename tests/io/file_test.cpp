// sa::io::File: positioned reads and writes, fsync, errors, threads.

#include <catch2/catch.hpp>

#include <sa/sa.hpp>

#include <unistd.h>

#include <cstring>

#include <string>
#include <thread>
#include <vector>

#include "test_support.hpp"

using namespace std::chrono_literals;

namespace {

std::string temp_path(const char* tag) {
  return "/tmp/sa_io_file_test_" + std::to_string(::getpid()) + "_" + tag;
}

void write_and_check(const std::string& path) {
  auto f = sa::io::File::open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
  constexpr std::size_t kSize = 3u << 20;
  std::vector<char> data(kSize);
  for (std::size_t i = 0; i < kSize; ++i) data[i] = static_cast<char>(i % 251);
  f.write_at(data.data(), data.size(), 0);
  f.write_at("HEAD", 4, 0);
  f.fsync();
  f.fsync(true);
  SA_FIBER_CHECK(f.size() == static_cast<off_t>(kSize));
  std::vector<char> back(kSize);
  std::size_t got = 0;
  while (got < kSize) {
    const std::size_t n = f.read_at(back.data() + got, kSize - got, static_cast<off_t>(got));
    SA_FIBER_CHECK(n > 0);
    if (n == 0) break;
    got += n;
  }
  std::memcpy(data.data(), "HEAD", 4);
  SA_FIBER_CHECK(back == data);
  char tail[8];
  SA_FIBER_CHECK(f.read_at(tail, sizeof tail, static_cast<off_t>(kSize)) == 0);  // EOF
  f.close();
  SA_FIBER_CHECK(!f.is_open());
  ::unlink(path.c_str());
}

}  // namespace

TEST_CASE("file: 3 MiB written at offsets reads back exactly, in a fiber") {
  sa_test::Watchdog wd{20s, "file io"};
  sa::Runtime rt{{.vprocs = 2}};
  rt.run([] {
    std::vector<sa::Fiber> fs;
    for (int i = 0; i < 4; ++i)
      fs.push_back(sa::spawn([i] { write_and_check(temp_path(std::string("f").append(std::to_string(i)).c_str())); }));
    for (auto& f : fs) f.join();
  });
  CHECK(sa_test::fiber_failures() == 0);
}

TEST_CASE("file: the same calls work from a plain thread") {
  sa_test::Watchdog wd{20s, "file io thread"};
  std::thread t([] { write_and_check(temp_path("thread")); });
  t.join();
  CHECK(sa_test::fiber_failures() == 0);
}

TEST_CASE("file: opening a missing file names the path and the errno") {
  sa_test::Watchdog wd{20s, "file errors"};
  sa::Runtime rt{{.vprocs = 1}};
  rt.run([] {
    try {
      sa::io::File::open("/nonexistent/sa/file");
      FAIL("no exception");
    } catch (const std::system_error& e) {
      CHECK(e.code().value() == ENOENT);
      CHECK_THAT(e.what(), Catch::Contains("/nonexistent/sa/file"));
    }
    std::error_code ec;
    auto f = sa::io::File::open("/nonexistent/sa/file", O_RDONLY, 0, ec);
    CHECK(ec.value() == ENOENT);
    CHECK(!f.is_open());
  });
}
