// Go peer of bench_mutex: 64 goroutines each doing K lock / increment /
// unlock on one sync.Mutex; ns per critical section. Exits 1 if the final
// counter is wrong.
package main

import (
	"fmt"
	"os"
	"sync"
	"time"

	"sabench/harness"
)

const workers = 64

func contend(k int) float64 {
	var m sync.Mutex
	var wg sync.WaitGroup
	counter := 0
	start := time.Now()
	wg.Add(workers)
	for w := 0; w < workers; w++ {
		go func() {
			defer wg.Done()
			for i := 0; i < k; i++ {
				m.Lock()
				counter++
				m.Unlock()
			}
		}()
	}
	wg.Wait()
	ns := harness.NsPer(start, workers*k)
	if counter != workers*k {
		fmt.Fprintf(os.Stderr, "bench mutex: FAILED: go: counter %d, expected %d\n", counter, workers*k)
		os.Exit(1)
	}
	return ns
}

func main() {
	args := harness.Parse()
	k := args.Pick(20000, 4000)
	harness.Report("mutex", "go", "ns_per_op", args.Measure(func() float64 { return contend(k) }), "ns")
}
