package acme

import (
	"fmt"
	"os"
	"strings"
	"time"
)

// timingEnv names the environment variable the end-to-end tests set to
// shorten the waits (a test cannot wait a minute for a retry). It is not
// documented for operators; a worker that sees it says so in its log.
// Format: "retry=2s,renew_check=1s".
const timingEnv = "MCPGATE_ACME_TEST_TIMING"

// timing: the zero value is production.
type timing struct {
	// retryEvery replaces the retry schedule by a fixed interval.
	retryEvery time.Duration
	// renewCheck replaces certmagic's renewal check interval (10m).
	renewCheck time.Duration
}

// retryIntervals is how long to wait after the n-th failed attempt to
// obtain a certificate: certmagic's own schedule for background obtains,
// kept here because mcpgate drives the attempts (to report them and to
// free the lock between them). The last one repeats: a proxy keeps trying
// until it has a certificate.
var retryIntervals = []time.Duration{
	time.Minute, 2 * time.Minute, 2 * time.Minute, 5 * time.Minute,
	10 * time.Minute, 10 * time.Minute, 10 * time.Minute,
	20 * time.Minute, 20 * time.Minute, 20 * time.Minute, 20 * time.Minute,
	30 * time.Minute, 30 * time.Minute, 30 * time.Minute, 30 * time.Minute, 30 * time.Minute, 30 * time.Minute,
	time.Hour, time.Hour, time.Hour,
	2 * time.Hour, 2 * time.Hour,
	3 * time.Hour, 3 * time.Hour,
	6 * time.Hour,
}

func (t timing) retry(failures int) time.Duration {
	if t.retryEvery > 0 {
		return t.retryEvery
	}
	return retryIntervals[min(failures, len(retryIntervals)-1)]
}

func timingFromEnv() (timing, error) {
	var t timing
	v := os.Getenv(timingEnv)
	if v == "" {
		return t, nil
	}
	for kv := range strings.SplitSeq(v, ",") {
		k, val, _ := strings.Cut(kv, "=")
		d, err := time.ParseDuration(val)
		if err != nil || d <= 0 {
			return t, fmt.Errorf("acme: %s: %q: want a positive duration", timingEnv, kv)
		}
		switch k {
		case "retry":
			t.retryEvery = d
		case "renew_check":
			t.renewCheck = d
		default:
			return t, fmt.Errorf("acme: %s: unknown setting %q", timingEnv, k)
		}
	}
	return t, nil
}
