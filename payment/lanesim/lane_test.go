package lanesim

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// TestLaneSim runs SCANPAY_SIM_SEEDS seeds (default 50) from
// SCANPAY_SIM_FIRST (default 1), spread over the machine's cores, or only
// SCANPAY_SIM_SEED with the lane's log on stderr.
func TestLaneSim(t *testing.T) {
	if s := os.Getenv("SCANPAY_SIM_SEED"); s != "" {
		seed, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("SCANPAY_SIM_SEED=%q: %v", s, err)
		}
		runSeed(t, seed, true)
		return
	}
	seeds := envInt(t, "SCANPAY_SIM_SEEDS", 50)
	first := envInt(t, "SCANPAY_SIM_FIRST", 1)
	shards := runtime.GOMAXPROCS(0)
	var done, failed atomic.Int64
	start := time.Now()
	t.Run("shards", func(t *testing.T) {
		for s := 0; s < shards; s++ {
			t.Run(fmt.Sprintf("shard%d", s), func(t *testing.T) {
				t.Parallel()
				for seed := first + s; seed < first+seeds && failed.Load() == 0; seed += shards {
					if !runSeed(t, uint64(seed), false) {
						failed.Add(1)
						t.Logf("seed %d failed: replay it with  SCANPAY_SIM_SEED=%d make sim", seed, seed)
						return
					}
					done.Add(1)
				}
			})
		}
	})
	took := time.Since(start)
	fmt.Printf("lanesim: %d of %d seeds passed in %.1f s (%.1f seeds/s), from seed %d\n",
		done.Load(), seeds, took.Seconds(), float64(done.Load())/took.Seconds(), first)
}

// runSeed plays one seed in its own bubble and reports whether it passed.
func runSeed(t *testing.T, seed uint64, verbose bool) bool {
	ok := false
	t.Run(fmt.Sprintf("seed%d", seed), func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			w := newWorld(t, seed, verbose)
			w.run(4 + w.rng.IntN(22))
			ok = !t.Failed() // not reached after a Fatal
		})
		ok = ok && !t.Failed()
	})
	return ok
}

func envInt(t *testing.T, name string, def int) int {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q must be a positive number", name, s)
	}
	return n
}
