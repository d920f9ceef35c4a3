// Go peer of bench_spawn_join: N trivial goroutines started in batches of
// 1000, each batch awaited with a sync.WaitGroup; ns per goroutine.
package main

import (
	"sync"
	"time"

	"sabench/harness"
)

const batch = 1000

func spawnJoin(n int) float64 {
	var wg sync.WaitGroup
	start := time.Now()
	for done := 0; done < n; done += batch {
		wg.Add(batch)
		for i := 0; i < batch; i++ {
			go wg.Done()
		}
		wg.Wait()
	}
	return harness.NsPer(start, n)
}

func main() {
	args := harness.Parse()
	n := args.Pick(100000, 20000)
	harness.Report("spawn_join", "go", "ns_per_op", args.Measure(func() float64 { return spawnJoin(n) }), "ns")
}
