// Go peer of bench_echo: a TCP echo server on Go's net package, one
// goroutine per connection reading into a 16 KiB buffer and writing back
// what it read (explicit Read/Write, as the C++ servers; io.Copy would
// splice). Listens on 127.0.0.1:PORT (--port, 0: the kernel picks), prints
// "port N" on stdout once listening, and serves until killed. GOMAXPROCS is
// Go's default, every CPU. Go sets TCP_NODELAY on its connections.
package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"time"
)

func serve(c net.Conn) {
	defer c.Close()
	buf := make([]byte, 16*1024)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func main() {
	port := flag.Int("port", 0, "port to listen on (0: any)")
	flag.Parse()
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", *port))
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench echo: go server: %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("port %d\n", ln.Addr().(*net.TCPAddr).Port)
	for {
		c, err := ln.Accept()
		if err != nil {
			time.Sleep(10 * time.Millisecond) // EMFILE and friends
			continue
		}
		go serve(c)
	}
}
