// Package harness is the Go side of bench/harness.hpp: flags, medians and
// the JSON report lines every peer prints.
package harness

import (
	"flag"
	"fmt"
	"sort"
	"time"
)

// Args are the flags every Go peer accepts: --quick and --reps N.
type Args struct {
	Quick bool
	Reps  int
}

// Parse reads the flags; --quick alone means 3 repetitions.
func Parse() Args {
	quick := flag.Bool("quick", false, "3 repetitions and fewer iterations")
	reps := flag.Int("reps", 0, "repetitions whose median is reported")
	flag.Parse()
	a := Args{Quick: *quick, Reps: *reps}
	if a.Reps <= 0 {
		a.Reps = 7
		if a.Quick {
			a.Reps = 3
		}
	}
	return a
}

// Pick returns full normally and quick under --quick.
func (a Args) Pick(full, quick int) int {
	if a.Quick {
		return quick
	}
	return full
}

// Measure runs once one time to warm up, then a.Reps times, and returns the
// median of the per-operation costs it returned.
func (a Args) Measure(once func() float64) float64 {
	once()
	samples := make([]float64, 0, a.Reps)
	for i := 0; i < a.Reps; i++ {
		samples = append(samples, once())
	}
	sort.Float64s(samples)
	n := len(samples)
	if n%2 == 1 {
		return samples[n/2]
	}
	return (samples[n/2-1] + samples[n/2]) / 2
}

// NsPer is the elapsed time since start in nanoseconds divided by ops.
func NsPer(start time.Time, ops int) float64 {
	return float64(time.Since(start).Nanoseconds()) / float64(ops)
}

// Report prints one JSON line in the format of bench/harness.hpp.
func Report(bench, system, metric string, value float64, unit string) {
	// Four significant digits, without an exponent for values people read.
	number := fmt.Sprintf("%.4g", value)
	if value >= 1e4 && value < 1e12 {
		number = fmt.Sprintf("%.0f", value)
	}
	fmt.Printf("{\"bench\":\"%s\",\"system\":\"%s\",\"metric\":\"%s\",\"value\":%s,\"unit\":\"%s\"}\n",
		bench, system, metric, number, unit)
}
