// Package lanesim is the whole-lane simulation: a seeded, single-process
// run of one checkout lane on a fake clock (testing/synctest), with the
// real payment.Terminal, journal and ecr.Link, driven by models of the
// world around them:
//
//   - a cash register speaking Concert over an in-memory line: blank,
//     fresh and reused references, A010 and A011, answers it misses,
//     requests it sends again, refunds it retries, and a line it floods
//     and resets, at once (while the link may wait on the gateway for its
//     request) or after the answer was offered;
//   - a customer with a scanner: fresh, repeated and malformed codes, a
//     second scan during a sale, walking away;
//   - a cashier typing amounts on the keypad;
//   - the gateway simulator behind an in-process transport with a round
//     trip of 50 to 800 ms of fake time per call, and faults: lost
//     replies, refused requests, 5xx, slow replies, replies that lie
//     about the amount or currency, replies without payOrderId, and every
//     amount scenario of iotpay.md;
//   - a wall clock that steps by a day, both ways, and crashes that stop
//     the lane and restart it from its journal.
//
// After the run, with faults off, the lane drains, and an oracle checks
// that every answer the register got is backed by the order it speaks
// for: approvals by distinct paid orders made for those requests, no
// "declined" for a paid order unless it was refunded in full, no request
// paid twice, refunds executed at most once and never beyond the paid
// amount, every paid order approved or refunded or listed for the
// operator, nothing left open, no payment code in any log, screen or
// register frame, and a lane that still sells.
//
// The package holds only tests: `make sim SEEDS=N` runs N seeds; a
// failure prints its seed, and SCANPAY_SIM_SEED=N replays it with the
// lane's log. The seed fixes every choice the models make; the order of
// goroutines within one instant of fake time is the runtime's.
package lanesim
