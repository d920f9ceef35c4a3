// Go peer of bench_ping_pong: two goroutines exchange an int over two
// unbuffered channels with GOMAXPROCS=2; ns per round trip. Every reply is
// checked (value + 1).
package main

import (
	"fmt"
	"os"
	"runtime"
	"time"

	"sabench/harness"
)

func pingPong(n int) float64 {
	ping := make(chan int)
	pong := make(chan int)
	go func() {
		for v := range ping {
			pong <- v + 1
		}
	}()
	start := time.Now()
	for i := 0; i < n; i++ {
		ping <- i
		if r := <-pong; r != i+1 {
			fmt.Fprintf(os.Stderr, "bench ping_pong: FAILED: go: reply %d to %d\n", r, i)
			os.Exit(1)
		}
	}
	ns := harness.NsPer(start, n)
	close(ping)
	return ns
}

func main() {
	args := harness.Parse()
	runtime.GOMAXPROCS(2)
	n := args.Pick(100000, 20000)
	harness.Report("ping_pong", "go", "ns_per_op", args.Measure(func() float64 { return pingPong(n) }), "ns")
}
