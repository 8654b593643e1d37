// Package payment is scanpay's sale engine. A Terminal owns one checkout
// lane: one goroutine consumes amount requests, cancels, scanned codes and
// gateway replies, drives the sale state machine, journals every order
// before it is sent and every later state before it is shown, and hands
// screens, beeps and results to outputs that can never block it. Orders
// the sale could not settle go to a background reconciler; refunds are
// journaled before they are sent.
//
// It also holds the rules the engine applies and others check against: the
// wallet table that classifies a code, the lane rules (CheckLane: terminal
// id, currency, amount limit) and the settings derived from the polling
// policy (Config.Derived). It imports nothing outside payment/: devices
// reach it through the daemon, and its outputs through small interfaces.
package payment
