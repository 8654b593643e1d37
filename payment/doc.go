// Package payment is scanpay's sale engine. A Terminal owns one checkout
// lane: one goroutine consumes amount requests, cancels, scanned codes and
// gateway replies, drives the sale state machine, journals every order
// before it is sent and every later state before it is shown, and hands
// screens, beeps and results to outputs that can never block it. Orders
// the sale could not settle go to a background reconciler; refunds are
// journaled before they are sent.
package payment
