package ecr

import "time"

// ExchangeLimit lets the link tests (package ecr_test, so that they can
// use ecrtest's register) see the bound on one exchange.
func (l *Link) ExchangeLimit() time.Duration { return l.exchangeLimit() }
