package workload

import (
	"os"
	"strconv"
	"testing"
	"time"
)

// Seed returns a fresh seed for a randomized test, or the one in the
// environment variable env, which replays a failure's workload (and
// whatever else the test draws from the seed). It logs how to replay it.
func Seed(t testing.TB, env string) uint64 {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv(env); v != "" {
		s, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("%s: %v", env, err)
		}
		seed = s
	}
	t.Logf("workload seed %d (%s=%d replays it)", seed, env, seed)
	return seed
}
