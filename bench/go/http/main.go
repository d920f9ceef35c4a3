// Go peer of bench_http: a net/http server answering every request with
// "Hello, World!" (Content-Type text/plain), the reply of
// samples/http_hello.cpp; net/http adds a Date header. Listens on
// 127.0.0.1:PORT (--port, 0: the kernel picks), prints "port N" on stdout
// once listening, and serves until killed. GOMAXPROCS is Go's default,
// every CPU.
package main

import (
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
)

var hello = []byte("Hello, World!")

func main() {
	port := flag.Int("port", 0, "port to listen on (0: any)")
	flag.Parse()
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", *port))
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench http: go server: %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("port %d\n", ln.Addr().(*net.TCPAddr).Port)
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Write(hello)
	})
	err = http.Serve(ln, nil)
	fmt.Fprintf(os.Stderr, "bench http: go server: %v\n", err)
	os.Exit(1)
}
