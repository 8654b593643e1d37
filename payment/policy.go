package payment

import "time"

// Derived returns c with the settings that follow from others set from
// them, so that every caller gets the same engine from the same polling
// policy:
//   - the reconciler's first retries follow the polling pace (10 s at the
//     default 2 s), capped at c.ReconcileMin;
//   - "never reached the gateway" needs the gateway to keep not knowing an
//     order for ten polling windows (10 min by default, far past a payment
//     code's one-minute life), capped at c.NotFoundFinalAfter, so only
//     test-sized windows shorten it;
//   - the reconciler's backoff never exceeds how long it keeps trying.
//
// Applying it twice changes nothing.
func (c Config) Derived() Config {
	c.ReconcileMin = min(c.ReconcileMin, 5*c.PollInterval)
	c.NotFoundFinalAfter = min(c.NotFoundFinalAfter, 10*time.Duration(c.PollAttempts)*c.PollInterval)
	c.ReconcileMax = min(c.ReconcileMax, c.ReconcileFor)
	return c
}
