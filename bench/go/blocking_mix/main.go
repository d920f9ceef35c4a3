// Go peer of bench_blocking_mix: the compute throughput Go keeps while K
// goroutines sit blocked in syscall.Read on pipes (blocking fds, not the
// netpoller: Go's sysmon hands the P of a goroutine stuck in a syscall to
// another thread), for K = 0, 1, 2, 4, 8. Same rounds as bench/blocking_mix.cpp:
// M = 4 * GOMAXPROCS goroutines of `iters` LCG steps each, runtime.Gosched()
// every 1000 steps, started once the blockers entered their read; the round
// ends when the last one finishes or the window expires, then the pipes are
// written. Prints iters_per_ms_k<K>, kept_vs_k0_k<K> and kept_vs_k0_min for
// system "go" (medians over repetitions, K interleaved).
package main

import (
	"fmt"
	"os"
	"runtime"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"sabench/harness"
)

const (
	yieldEvery = 1000
	enterWait  = 50 * time.Millisecond
	settle     = 5 * time.Millisecond
)

var ks = []int{0, 1, 2, 4, 8}

var sink uint64 // keeps the results alive

// steps runs yieldEvery LCG steps from x (Knuth's MMIX constants).
func steps(x uint64) uint64 {
	for i := 0; i < yieldEvery; i++ {
		x = x*6364136223846793005 + 1442695040888963407
	}
	return x
}

type plan struct {
	m      int   // compute goroutines
	iters  int64 // steps per goroutine
	window time.Duration
}

// calibrate sizes a round so that K = 0 takes about target on procs Ps.
func calibrate(procs int, target time.Duration) plan {
	x := uint64(1)
	var done int64
	start := time.Now()
	for time.Since(start) < 20*time.Millisecond {
		x = steps(x)
		done += yieldEvery
	}
	atomic.AddUint64(&sink, x)
	perMs := float64(done) / (float64(time.Since(start).Nanoseconds()) / 1e6)
	p := plan{m: 4 * procs, window: 3 * target}
	iters := int64(perMs*float64(target.Milliseconds())) * int64(procs) / int64(p.m)
	p.iters = iters / yieldEvery * yieldEvery
	if p.iters < yieldEvery {
		p.iters = yieldEvery
	}
	return p
}

type counter struct {
	n int64
	_ [56]byte
}

// round is one round's throughput in steps per ms with k blockers.
func round(p plan, k int) float64 {
	pipes := make([][2]int, k)
	for i := range pipes {
		fds := make([]int, 2)
		if err := syscall.Pipe(fds); err != nil {
			fail("pipe: " + err.Error())
		}
		pipes[i] = [2]int{fds[0], fds[1]}
	}
	var entered, finished int32
	var start, stop int32
	var tEnd int64
	progress := make([]counter, p.m)
	allDone := make(chan struct{})
	var wg sync.WaitGroup

	wg.Add(k + p.m)
	for i := 0; i < k; i++ {
		fd := pipes[i][0]
		go func() {
			defer wg.Done()
			atomic.AddInt32(&entered, 1)
			buf := make([]byte, 1)
			if n, err := syscall.Read(fd, buf); n != 1 || err != nil {
				fail("blocker: read failed")
			}
		}()
	}
	for i := 0; i < p.m; i++ {
		i := i
		go func() {
			defer wg.Done()
			for atomic.LoadInt32(&start) == 0 {
				runtime.Gosched()
			}
			x := uint64(i) + 1
			var done int64
			for done < p.iters && atomic.LoadInt32(&stop) == 0 {
				x = steps(x)
				done += yieldEvery
				atomic.StoreInt64(&progress[i].n, done)
				runtime.Gosched()
			}
			atomic.AddUint64(&sink, x)
			if int(atomic.AddInt32(&finished, 1)) == p.m {
				atomic.StoreInt64(&tEnd, time.Now().UnixNano())
				close(allDone)
			}
		}()
	}

	enterBy := time.Now().Add(enterWait)
	for int(atomic.LoadInt32(&entered)) < k && time.Now().Before(enterBy) {
		time.Sleep(100 * time.Microsecond)
	}
	time.Sleep(settle)
	t0 := time.Now()
	atomic.StoreInt32(&start, 1)
	var total int64
	var elapsedNs int64
	select {
	case <-allDone:
		total = int64(p.m) * p.iters
		elapsedNs = atomic.LoadInt64(&tEnd) - t0.UnixNano()
	case <-time.After(p.window):
		elapsedNs = time.Since(t0).Nanoseconds()
		for i := range progress {
			total += atomic.LoadInt64(&progress[i].n)
		}
		atomic.StoreInt32(&stop, 1)
	}
	for _, fds := range pipes {
		if _, err := syscall.Write(fds[1], []byte{'x'}); err != nil {
			fail("write: " + err.Error())
		}
	}
	wg.Wait()
	for _, fds := range pipes {
		syscall.Close(fds[0])
		syscall.Close(fds[1])
	}
	return float64(total) / (float64(elapsedNs) / 1e6)
}

func median(v []float64) float64 {
	sort.Float64s(v)
	n := len(v)
	if n%2 == 1 {
		return v[n/2]
	}
	return (v[n/2-1] + v[n/2]) / 2
}

func fail(text string) {
	fmt.Fprintf(os.Stderr, "bench blocking_mix: FAILED: go: %s\n", text)
	os.Exit(1)
}

func main() {
	args := harness.Parse()
	target := time.Duration(args.Pick(100, 40)) * time.Millisecond
	p := calibrate(runtime.GOMAXPROCS(0), target)

	for _, k := range ks { // warm-up
		round(p, k)
	}
	samples := make([][]float64, len(ks))
	for rep := 0; rep < args.Reps; rep++ {
		for i, k := range ks {
			samples[i] = append(samples[i], round(p, k))
		}
	}
	med := make([]float64, len(ks))
	for i, k := range ks {
		med[i] = median(samples[i])
		harness.Report("blocking_mix", "go", "iters_per_ms_k"+strconv.Itoa(k), med[i], "iters/ms")
	}
	keptMin := 1e300
	for i := 1; i < len(ks); i++ {
		kept := 0.0
		if med[0] > 0 {
			kept = med[i] / med[0]
		}
		if kept < keptMin {
			keptMin = kept
		}
		harness.Report("blocking_mix", "go", "kept_vs_k0_k"+strconv.Itoa(ks[i]), kept, "x")
	}
	harness.Report("blocking_mix", "go", "kept_vs_k0_min", keptMin, "x")
}
