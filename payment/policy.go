package payment

import (
	"fmt"
	"regexp"
	"slices"
	"time"
)

// The lane rules: what a terminal id, a currency and an amount limit may
// be. The engine's Config.Validate and the config file's validation both
// apply CheckLane, so the rules live here only.

// MaxAmountLimit is the largest amount limit a lane may have, in cents:
// eight digits, the most a register's Concert request carries.
const MaxAmountLimit int64 = 99999999

// currencies are the ones IOTPay takes for these wallets.
var currencies = []string{"CAD", "USD"}

// terminalIDPattern keeps order numbers within IOTPay's 30 characters
// (see OrderNumber).
var terminalIDPattern = regexp.MustCompile(`^[A-Za-z0-9_]{1,12}$`)

// LaneField names the Config field a lane rule is about.
type LaneField string

// The fields CheckLane checks.
const (
	FieldTerminalID LaneField = "terminal id"
	FieldCurrency   LaneField = "currency"
	FieldMaxAmount  LaneField = "max amount"
)

// LaneError is a value that breaks a lane rule. Callers that file it under
// their own names (config keys) branch on Field, never on the message;
// Msg describes the value without naming the field.
type LaneError struct {
	Field LaneField
	Msg   string
}

func (e *LaneError) Error() string { return string(e.Field) + " " + e.Msg }

// CheckLane applies the lane rules and returns every one broken, each a
// *LaneError.
func CheckLane(terminalID, currency string, maxAmount int64) []error {
	var errs []error
	if !terminalIDPattern.MatchString(terminalID) {
		errs = append(errs, &LaneError{FieldTerminalID, fmt.Sprintf("%q must be 1–12 letters, digits or _ (it starts every order number)", terminalID)})
	}
	if !slices.Contains(currencies, currency) {
		errs = append(errs, &LaneError{FieldCurrency, fmt.Sprintf("%q must be CAD or USD", currency)})
	}
	if maxAmount < 1 || maxAmount > MaxAmountLimit {
		errs = append(errs, &LaneError{FieldMaxAmount, fmt.Sprintf("%d must be 1–%d cents", maxAmount, MaxAmountLimit)})
	}
	return errs
}

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
